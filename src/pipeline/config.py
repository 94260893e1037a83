"""Loading and validating the workflow configuration.

The JSON Schema in ``schemas/config.schema.yaml`` (also at
``workflow/schemas/config.schema.yaml``) is the single source of defaults: validation
fills them in, so the Snakefile and every CLI sub-command see the same resolved config.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml
from jsonschema import Draft202012Validator, validators

from pipeline.io.outputs import write_text

#: Pythia's ``Random:seed`` accepts 0 ... 900 000 000 (0 would mean "use the time").
PYTHIA_MAX_SEED = 900_000_000


class ConfigError(ValueError):
    """A configuration that does not match the schema; the message names the key."""


def schema() -> dict:
    """The configuration schema as a dict."""
    text = resources.files("pipeline").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _with_defaults(validator_class):
    """A validator class that fills each missing property with its schema default."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _is_integer(checker, instance) -> bool:
    # jsonschema's "integer" accepts 2.0: shards: 2.0 would validate and crash an input
    # function, and seed: 3.0 would derive other seeds than seed: 3 (derive_seed uses str).
    return isinstance(instance, int) and not isinstance(instance, bool)


_DefaultingValidator = validators.extend(
    _with_defaults(Draft202012Validator),
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def _key_path(error, instance: Any, prefix: tuple = ()) -> str:
    """The key of an error, ``a.b.c``; a list item that has a name is shown with it
    (``calorimeter.layers.1 ('em2').stochastic``)."""
    parts = list(map(str, prefix))
    for part in error.absolute_path:
        try:
            instance = instance[part]
        except (KeyError, IndexError, TypeError):
            instance = None
        named = isinstance(part, int) and isinstance(instance, Mapping) and isinstance(instance.get("name"), str)
        parts.append(f"{part} ({instance['name']!r})" if named else str(part))
    return ".".join(parts) or "<top level>"


def _error_line(error, instance: Any, prefix: tuple = ()) -> str:
    """One error as "key: message", with the schema's ``x-hint`` for the failed keyword.

    ``x-hint`` maps a keyword (maximum, pattern, ...) to advice for the reader. For
    pattern and anyOf the hint replaces jsonschema's message, which would only quote the
    regex or say "not valid under any of the given schemas".
    """
    hint = error.schema.get("x-hint", {}).get(error.validator) if isinstance(error.schema, dict) else None
    if error.validator == "type" and isinstance(error.instance, float) and "integer" in error.validator_value:
        hint = "write whole numbers without a decimal point"
    if hint and error.validator in ("pattern", "anyOf"):
        message = f"{error.instance!r}: {hint}"
    else:
        message = f"{error.message} ({hint})" if hint else error.message
    return f"  {_key_path(error, instance, prefix)}: {message}"


def _raise_errors(validator, instance: Any, source: str, prefix: tuple = ()) -> None:
    """Validate ``instance`` in place (defaults filled in); ConfigError listing every error."""
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError(f"{source}: invalid configuration:\n"
                          + "\n".join(_error_line(e, instance, prefix) for e in errors))


def validate_section(name: str, settings: Mapping[str, Any] | None, source: str = "config") -> dict:
    """One top-level section (``calorimeter``, ...) validated against its part of the
    schema, a copy with its defaults filled in: for code that builds a section alone."""
    resolved = copy.deepcopy(dict(settings or {}))
    _raise_errors(_DefaultingValidator(schema()["properties"][name]), resolved, source, prefix=(name,))
    return resolved


def validate_config(config: Mapping[str, Any], source: str = "config") -> dict:
    """Validate ``config`` against the schema and return a copy with defaults filled in.

    Raises ConfigError naming ``source`` and the offending key for an unknown key, a
    wrong type (also 2.0 for an integer), a value out of range, split fractions that do
    not add up to one, or a lower limit (pthat_min, jets.min_pt) not below its upper
    limit. Pythia settings are checked by check_pythia_settings_of.
    """
    resolved = copy.deepcopy(dict(config))
    _raise_errors(_DefaultingValidator(schema()), resolved, source)
    fractions = resolved["split"]
    total = fractions["train"] + fractions["val"] + fractions["test"]
    if abs(total - 1.0) > 1e-9:
        raise ConfigError(
            f"{source}: invalid configuration:\n  split: train + val + test = {total:g}, expected 1"
        )
    for name, sample in resolved["samples"].items():
        _check_below_limit(source, f"samples.{name}", sample, "pthat_min", "pthat_max")
        _check_below_limit(source, f"samples.{name}.jets", sample["jets"], "min_pt", "max_pt")
    vertexing = resolved["vertexing"]
    if vertexing["sample"] is None:
        # The first sample that is not one of the jet-image study's pair (those skip the tracker).
        images = image_study_samples(resolved)
        tracked = [name for name in resolved["samples"] if name not in images]
        vertexing["sample"] = (tracked or list(resolved["samples"]))[0]
    elif vertexing["sample"] not in resolved["samples"]:
        raise ConfigError(
            f"{source}: invalid configuration:\n  vertexing.sample: unknown sample "
            f"{vertexing['sample']!r}, expected one of {sorted(resolved['samples'])}"
        )
    if vertexing["max_tracks"] < vertexing["min_tracks"]:
        raise ConfigError(
            f"{source}: invalid configuration:\n  vertexing.max_tracks ({vertexing['max_tracks']}) "
            f"is below vertexing.min_tracks ({vertexing['min_tracks']})"
        )
    from pipeline.simulation.calorimeter_geometry import CalorimeterGeometry

    try:  # the cross-field checks (the schema checked every key)
        CalorimeterGeometry.from_settings(resolved["calorimeter"])
    except ValueError as err:
        raise ConfigError(f"{source}: invalid configuration:\n  {err}") from None
    for key in ("signal", "background"):
        name = resolved["jet_images"][key]
        if name in resolved["samples"] and not resolved["samples"][name]["particles"]["store"]:
            raise ConfigError(f"{source}: invalid configuration:\n  samples.{name}.particles.store: the jet-image "
                              f"study's {key} sample needs its particles for the calorimeter; expected true")
    for name in resolved["validation"]["samples"]:
        if name not in resolved["samples"]:
            raise ConfigError(
                f"{source}: invalid configuration:\n  validation.samples: unknown sample "
                f"{name!r}, expected one of {sorted(resolved['samples'])}"
            )
    return resolved


def check_pythia_settings_of(config: Mapping[str, Any], source: str = "config") -> None:
    """Raise ConfigError naming the sample and the line for a ``pythia_settings`` value
    that Pythia would silently misread (``simulation.pythia.check_pythia_settings``).

    Apart from validate_config because it reads Pythia's settings database (half a second):
    the Snakefile, ``pipeline config`` and the generate command ask, not every job."""
    from pipeline.simulation.pythia import check_pythia_settings

    for name, sample in config["samples"].items():
        try:
            check_pythia_settings(sample["pythia_settings"])
        except ValueError as err:
            raise ConfigError(f"{source}: invalid configuration:\n  samples.{name}.pythia_settings: {err}") from None


def _check_below_limit(source: str, where: str, section: Mapping[str, Any], low: str, high: str) -> None:
    """Refuse ``section[low] >= section[high]`` where the upper limit is set (-1: none)."""
    if section[high] >= 0 and section[low] >= section[high]:
        raise ConfigError(
            f"{source}: invalid configuration:\n  {where}.{low} ({section[low]}) is not below "
            f"{where}.{high} ({section[high]}); expected {low} < {high}, or {high}: -1 for no limit"
        )


def image_study_samples(config: Mapping[str, Any]) -> list[str]:
    """The jet-image study's [signal, background] samples if the config defines both (the
    study runs; they go through the calorimeter, not the tracker), else []."""
    names = [config["jet_images"][role] for role in ("signal", "background")]
    return names if all(name in config["samples"] for name in names) else []


def load_config(path: str | Path) -> dict:
    """Read a YAML (or JSON) config file and validate it (see validate_config)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return validate_config(raw, source=str(path))


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON form of a (resolved) config."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def derive_seed(global_seed: int, *names: object, maximum: int = PYTHIA_MAX_SEED) -> int:
    """A seed in [1, maximum] derived from the global seed and a stream's names.

    ``derive_seed(seed, "ttbar", 3, "pythia")`` is stable across runs and machines and
    differs between samples, shards and streams.
    """
    key = ":".join([str(global_seed), *map(str, names)])
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") % maximum + 1


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
