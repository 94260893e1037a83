"""The studies of the pipeline, one package each under ``pipeline.studies``, and the registry.

A study is one name (``pipeline.studies.descriptor.Study``): its package exports ``STUDY``,
its descriptor, and everything shared reads the studies from here: the workflow (which rule
files it includes, ``rule all``), the config validation (``pipeline.run_config``), the CLI
groups, the tests. Adding a study is a new package, a rule file, a schema section and one
entry in ``STUDIES`` (CONTRIBUTING.md). This module imports nothing
heavy: the Snakefile and ``pipeline --help`` read it.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any, Mapping

from pipeline.studies.descriptor import Study

#: The registry: every study, in the order of the workflow (a study comes after those whose outputs it reads).
STUDIES = ("vertexing", "flavour_tagging", "jet_images", "particle_flow", "super_resolution", "learning_curves")


def study(name: str) -> Study:
    """The descriptor of a registered study."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; expected one of {STUDIES}")
    return import_module(f"pipeline.studies.{name}").STUDY


def registered() -> list[Study]:
    """Every study's descriptor, in the registry's order."""
    return [study(name) for name in STUDIES]


def study_module(name: str, part: str) -> ModuleType:
    """``pipeline.studies.<name>.<part>`` (``commands``, ``formats``, ...)."""
    study(name)
    return import_module(f"pipeline.studies.{name}.{part}")


def active_studies(config: Mapping[str, Any]) -> list[Study]:
    """The studies a resolved config runs: those whose samples it defines and whose required studies run."""
    running: list[Study] = []
    for descriptor in registered():
        names = {s.name for s in running}
        if descriptor.samples(config) and all(required in names for required in descriptor.requires):
            running.append(descriptor)
    return running


def active(name: str, config: Mapping[str, Any]) -> bool:
    """Whether the study ``name`` runs with this resolved config."""
    return any(descriptor.name == name for descriptor in active_studies(config))


def tracking_samples(config: Mapping[str, Any]) -> list[str]:
    """The samples whose jets go through the tracker: the generated ones (not a public data
    set's files) but the particle guns and the samples of studies that read another
    detector (the jet images' calorimeter pair)."""
    from pipeline.config import generated, gun_samples  # here: the registry stays light for `pipeline --help`

    skipped = set(gun_samples(config)) | (set(config["samples"]) - set(generated(config["samples"])))
    for descriptor in registered():
        if not descriptor.uses_tracker:
            skipped.update(descriptor.samples(config))
    return [name for name in config["samples"] if name not in skipped]
