"""What every study declares about itself: one light ``Study`` object per study.

Each ``pipeline.studies.<name>/__init__.py`` exports ``STUDY``, a ``Study``; everything
shared loops over the registered ones (``pipeline.studies.registered``): the workflow's
``rule all`` and which rule files it includes, the config validation, the report's
overview page, the CLI groups and the MLflow ``rule`` tag, the tests' expected jobs and
runs. A descriptor imports neither torch nor Lightning (the Snakefile and ``pipeline
--help`` read it); its callables import the study's modules when they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

Config = Mapping[str, Any]


def _no_check(config: Config) -> None:
    """A study without cross-checks beyond the schema."""


def _nothing_derived(config: dict) -> None:
    """A study whose settings the schema fills in completely."""


@dataclass(frozen=True)
class Study:
    """One study, under one name: the package ``pipeline.studies.<name>``, the CLI group
    ``pipeline <name>``, the rule file ``workflow/rules/<name>.smk`` with rules named
    ``<step>_<name>``, the config section ``<name>``, ``results/<name>/``, the report
    category ``<name>`` and the MLflow runs ``<name>.<step>.<method>``.

    ``samples(config)``: the samples the study reads; none (``[]``) turns it off.
    ``requires``: the studies whose outputs it needs (it runs only where they run; they
    come before it in the registry). ``reads``: every study whose files, readers or
    networks it uses (``requires`` and optional ones): the only studies its modules import. ``uses_tracker``: whether its samples go through the
    tracker (False: the calorimeter or a study's own detector instead). ``derive(config)``
    fills the settings the schema leaves to the run (``null`` defaults that depend on the
    samples), in place; ``check(config)`` raises ValueError naming the key for settings
    that do not fit together. ``outputs(config)``: what the study adds to ``rule all``;
    ``jobs(config)``: {rule: number of jobs} it adds to the DAG; ``runs(config)``: the
    MLflow run names its steps log. The last three are the study's plan, which the tests
    hold the workflow to.
    """

    name: str
    summary: str
    methods: tuple[str, ...]
    learned: tuple[str, ...]
    samples: Callable[[Config], list[str]]
    outputs: Callable[[Config], list[str]]
    jobs: Callable[[Config], dict[str, int]]
    runs: Callable[[Config], list[str]]
    requires: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    uses_tracker: bool = True
    derive: Callable[[dict], None] = field(default=_nothing_derived)
    check: Callable[[Config], None] = field(default=_no_check)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.learned) - set(self.methods))
        if unknown:
            raise ValueError(f"study {self.name!r}: learned methods {unknown} are not among its methods {self.methods}")
        undeclared = sorted(set(self.requires) - set(self.reads))
        if undeclared:
            raise ValueError(f"study {self.name!r}: requires {undeclared} but does not list them in reads")

    def rule(self, step: str) -> str:
        """The workflow rule of the CLI step ``pipeline <name> <step>``: ``<step>_<name>``
        (a step's dashes become underscores)."""
        return f"{step.replace('-', '_')}_{self.name}"

    @property
    def training_rule(self) -> str | None:
        """The rule that trains the study's learned methods (the Slurm profile sends it to GPUs), if any."""
        return self.rule("train") if self.learned else None


def present(config: Config, *names: str) -> list[str]:
    """``list(names)`` if the config defines every one of these samples, else ``[]`` (the study is off)."""
    return list(names) if all(name in config["samples"] for name in names) else []


def shards(config: Config, *samples: str) -> int:
    """The number of shards of these samples together, each sample counted once."""
    return sum(config["samples"][name]["shards"] for name in dict.fromkeys(samples))


def run_names(study: str, step: str, methods: tuple[str, ...] | list[str]) -> list[str]:
    """The MLflow run names of one step of a study, one per method."""
    from pipeline.ml.tracking import run_name  # here: descriptors stay light for `pipeline --help`

    return [run_name(study, step, method) for method in methods]
