"""The studies of the pipeline, one package each under ``pipeline.studies``.

A study ``<name>`` owns, under that one name: the package ``pipeline.studies.<name>``
(data preparation, formats, models, training, evaluation, metrics, its methods), the CLI
group ``pipeline <name> ...`` (``commands.register``), the rule file
``workflow/rules/<name>.smk`` (with the outputs it adds to ``rule all``), the config
section ``<name>`` of the schema, ``results/<name>/`` and the MLflow runs tagged
``study=<name>``. Adding a study is a new package, a rule file, a schema section and one
entry here (CONTRIBUTING.md). This module imports nothing heavy: the CLI reads it to
build ``pipeline --help``.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

#: The registry: every study, in the order of the workflow (a study may use an earlier one's outputs).
STUDIES = ("vertexing", "flavour_tagging", "jet_images", "particle_flow", "super_resolution")


def study_module(study: str, part: str) -> ModuleType:
    """``pipeline.studies.<study>.<part>`` (``commands``, ``formats``, ...)."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; expected one of {STUDIES}")
    return import_module(f"pipeline.studies.{study}.{part}")
