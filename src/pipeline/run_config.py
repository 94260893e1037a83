"""The configuration of a run: the schema's validation and defaults (``pipeline.config``),
the detector's cross-checks (``pipeline.simulation.checks``), then every registered study's
derived settings and cross-checks (``pipeline.studies``). The Snakefile and every command
read their config through here, so a setting that does not fit stops the run before any job
starts, with the file and the key named."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pipeline.config import config_errors, read_config_file, validate_config
from pipeline.simulation.checks import check_detectors
from pipeline.studies import registered


def resolve_config(config: Mapping[str, Any], source: str = "config") -> dict:
    """The run's config: validated against the schema with every default filled in, the
    detector settings checked, each study's derived settings filled in and its cross-checks
    run, in the registry's order. ConfigError naming ``source`` and the key otherwise."""
    resolved = validate_config(config, source)
    with config_errors(source):
        check_detectors(resolved)
        for study in registered():
            study.derive(resolved)
            study.check(resolved)
    return resolved


def load_config(path: str | Path) -> dict:
    """Read a YAML (or JSON) config file and resolve it (``resolve_config``)."""
    return resolve_config(read_config_file(path), source=str(path))
