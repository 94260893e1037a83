"""Loading and validating the workflow configuration.

The JSON Schema in ``schemas/config.schema.yaml`` (also at
``workflow/schemas/config.schema.yaml``) is the single source of defaults: validation
fills them in, so the Snakefile and every CLI sub-command see the same resolved config.
"""

from __future__ import annotations

import copy
import hashlib
import json
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from pipeline.config_schema import ConfigError, schema, validate_section, validated, without_password
from pipeline.io.outputs import write_text

__all__ = ["ConfigError", "schema", "validate_section", "validate_config", "read_config_file"]

def validate_config(config: Mapping[str, Any], source: str = "config") -> dict:
    """Validate ``config`` against the schema and return a copy with defaults filled in.

    Raises ConfigError naming ``source`` and the offending key for an unknown key, a
    wrong type (also 2.0 for an integer), a value out of range, split fractions that do
    not add up to one, a lower limit (pthat_min, jets.min_pt) not below its upper limit, a
    password in the tracking URI, training settings that cannot run (``check_training_settings``)
    or an unknown validation sample. The detector's and the studies' cross-checks run on top
    of this in ``pipeline.studies.resolve_config``, the generators' in
    ``pipeline.simulation.checks.check_generators``.
    """
    resolved = validated(config, source)
    fractions = resolved["split"]
    total = fractions["train"] + fractions["val"] + fractions["test"]
    if abs(total - 1.0) > 1e-9:
        raise ConfigError(
            f"{source}: invalid configuration:\n  split: train + val + test = {total:g}, expected 1"
        )
    for name, sample in generated(resolved["samples"]).items():
        _check_below_limit(source, f"samples.{name}", sample, "pthat_min", "pthat_max")
        _check_below_limit(source, f"samples.{name}.jets", sample["jets"], "min_pt", "max_pt")
    _check_no_credentials(source, resolved["mlflow"]["tracking_uri"])
    with config_errors(source):
        check_training_settings(resolved["training"])
        for study, section in resolved.items():
            if isinstance(section, Mapping) and isinstance(section.get("training"), Mapping):
                check_training_settings({**resolved["training"], **section["training"]}, f"{study}.training")
    for name in resolved["validation"]["samples"]:
        if name not in generated(resolved["samples"]):
            raise ConfigError(
                f"{source}: invalid configuration:\n  validation.samples: unknown generated sample "
                f"{name!r}, expected one of {sorted(generated(resolved['samples']))}"
            )
    return resolved


def check_training_settings(settings: Mapping[str, Any], where: str = "training") -> None:
    """ValueError naming the key unless a training section (a study's: with its overrides
    applied) can run: several nodes need Slurm to start their processes, and 16-bit mixed
    precision a GPU."""
    if settings["num_nodes"] > 1 and settings["launcher"] != "srun":
        raise ValueError(f"training.num_nodes: {settings['num_nodes']} nodes need training.launcher: srun (Slurm "
                         f"starts the processes of the other nodes); launcher {settings['launcher']!r} starts them "
                         "on this machine only")
    if settings["precision"] == "16-mixed" and settings["accelerator"] == "cpu":
        raise ValueError(f"{where}.precision: 16-mixed runs on GPUs only (PyTorch has no float16 autocast with a "
                         "gradient scaler on CPUs); use bf16-mixed with accelerator cpu")


@contextmanager
def config_errors(source: str) -> Iterator[None]:
    """Turn the ValueError of a cross-check (its message naming the key) into a ConfigError naming ``source``."""
    try:
        yield
    except ValueError as err:
        raise ConfigError(f"{source}: invalid configuration:\n  {err}") from None


def _check_below_limit(source: str, where: str, section: Mapping[str, Any], low: str, high: str) -> None:
    """Refuse ``section[low] >= section[high]`` where the upper limit is set (-1: none)."""
    if section[high] >= 0 and section[low] >= section[high]:
        raise ConfigError(
            f"{source}: invalid configuration:\n  {where}.{low} ({section[low]}) is not below "
            f"{where}.{high} ({section[high]}); expected {low} < {high}, or {high}: -1 for no limit"
        )


def _check_no_credentials(source: str, uri: str) -> None:
    """Refuse a tracking URI with a password in it: the config is written to results/config/
    and quoted in job logs and errors, so the password would be kept in clear text. MLflow
    reads the credentials from the environment instead."""
    user_info = urllib.parse.urlsplit(uri).netloc.rpartition("@")[0]
    if ":" in user_info:
        raise ConfigError(
            f"{source}: invalid configuration:\n  mlflow.tracking_uri: {without_password(uri)!r} holds a password; "
            "the config is written to results/config/ and quoted in the job logs, so write the URI without it and "
            "give the credentials to the jobs' environment: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
            "(or MLFLOW_TRACKING_TOKEN) for a tracking server, the database's own (PGPASSWORD, a ~/.pgpass or "
            "~/.my.cnf file) for a database store")


def generated(samples: Mapping[str, Any]) -> dict[str, Any]:
    """The samples (``config["samples"]``) made by a generator: all but those read from a public
    data set's files (``source``, ``pipeline.datasets``)."""
    return {name: sample for name, sample in samples.items() if "source" not in sample}


def gun_samples(config: Mapping[str, Any]) -> list[str]:
    """The particle-gun samples (they skip the tracker and the jets' studies)."""
    return [name for name, sample in generated(config["samples"]).items() if sample["process"] == "particle_gun"]


def read_config_file(path: str | Path) -> dict:
    """The mapping in a YAML (or JSON) config file, not yet validated; ConfigError naming the file otherwise."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON form of a (resolved) config."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def sample_config(config: Mapping[str, Any], sample: str) -> dict:
    """The resolved settings of one sample, with a clear error for an unknown name."""
    try:
        return config["samples"][sample]
    except KeyError:
        raise ConfigError(
            f"unknown sample {sample!r}; the config defines {sorted(config['samples'])}"
        ) from None


def write_resolved_config(config: Mapping[str, Any], path: str | Path) -> Path:
    """Write a resolved config as YAML, atomically (temporary file, then rename)."""
    return write_text(path, f"# resolved pipeline config, hash {config_hash(config)}\n"
                      + yaml.safe_dump(dict(config), sort_keys=False))


def stage_config(config: Mapping[str, Any], sample: str, *sections: str) -> dict:
    """The part of a resolved config that one stage of one sample depends on.

    Always the global seed and the sample's settings, plus the named top-level sections
    (e.g. "tracker"). It is itself a valid config, stored in the stage's output files,
    and what decides whether Snakemake reruns the stage.
    """
    subset = {"seed": config["seed"], "samples": {sample: sample_config(config, sample)}}
    subset.update({name: config[name] for name in sections})
    return subset


#: Settings that say where runs are logged and where a running training keeps its epoch
#: checkpoints, not what is computed. A stage config's file name and a training's resume
#: fingerprint leave them out, so changing them (moving to a tracking server) reruns and
#: restarts nothing.
BOOKKEEPING_KEYS = (("mlflow",), ("training", "resume_dir"))


def without_bookkeeping(config: Mapping[str, Any]) -> dict:
    """A copy of a config without the BOOKKEEPING_KEYS: what decides the results."""
    result = copy.deepcopy(dict(config))
    for *parents, key in BOOKKEEPING_KEYS:
        section = result
        for parent in parents:
            section = section.get(parent, {})
        section.pop(key, None)
    return result


#: {snapshot path: full hash of the content written there} in this process.
_SNAPSHOTS: dict[Path, str] = {}


def snapshot_config(config: Mapping[str, Any], directory: str | Path, name: str = "config",
                    write: bool = True) -> Path:
    """A config stored under ``directory``, named by the hash of what decides the results.

    The workflow hands such a path to each job, so jobs see exactly the validated config
    of the run (including ``--config`` overrides), and a changed config is a new path,
    except for a change of the bookkeeping settings (BOOKKEEPING_KEYS): the file keeps its
    name and is rewritten with the new values, and nothing reruns. ``write=False`` only
    names the path: a dry run must not rewrite the snapshots that running jobs read.
    """
    path = Path(directory) / f"{name}-{config_hash(without_bookkeeping(config))[:12]}.yaml"
    full = config_hash(config)
    if write and _SNAPSHOTS.get(path) != full:
        written = None
        if path.exists():
            with open(path) as f:
                written = f.readline().rsplit(" ", 1)[-1].strip()  # "# resolved pipeline config, hash <full>"
        if written != full:
            write_resolved_config(config, path)
        _SNAPSHOTS[path] = full
    return path
