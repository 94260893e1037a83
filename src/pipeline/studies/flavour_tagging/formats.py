"""The flavour-tagging study's HDF5 format: a frozen vertex finder's edge scores of every
track pair (``vertex_edges``), the tagger's input. Bump the version whenever its fields
or their meaning change."""

from __future__ import annotations

from pipeline.io.hdf5 import Collection, FileSchema, fields

VERTEX_EDGES = FileSchema(
    "vertex_edges",
    1,
    (
        Collection("jets", None, fields(
            ("n_tracks", "i4", "", "number of tracks (n); the jet has n * n pair rows"),
            ("jet_index", "i8", "", "row of the jet in the track_graphs file scored"),
        ), "the jets of a track_graphs file, in its order"),
        Collection("pairs", "jets", fields(
            ("score", "f4", "", "the vertex finder's same-vertex score of tracks (i, j), row i * n + j; "
             "a probability for learned finders, 0 or 1 for partitions; 1 on the diagonal"),
        ), "every ordered track pair of the jet, row-major"),
    ),
    "a frozen vertex finder's same-vertex edge scores, the input of the flavour tagger",
)

#: This study's file schemas, by name.
SCHEMAS = {VERTEX_EDGES.name: VERTEX_EDGES}
