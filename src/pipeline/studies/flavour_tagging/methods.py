"""The flavour-tagging study's methods, named once: one tagger per vertex finder whose
edges it reads, and ``no_vertex``, the same tagger without vertex information."""

from pipeline.studies.vertexing.methods import METHODS as VERTEX_FINDERS

METHODS = ("no_vertex", *VERTEX_FINDERS)
#: Every tagger is trained.
LEARNED = METHODS
