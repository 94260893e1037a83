"""The configuration schema (``schemas/config.schema.yaml``, the one source of defaults and
per-key limits) and its validator: defaults filled in, integers that are ints, errors that
name the key (list items by name) and the schema's ``x-hint``. Imports nothing of the
pipeline, so any module (the calorimeter's geometry, the config) can validate against it.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from importlib import resources
from typing import Any, Mapping

import yaml
from jsonschema import Draft202012Validator, validators


class ConfigError(ValueError):
    """A configuration that does not match the schema; the message names the key."""


@functools.cache
def _parsed_schema() -> dict:
    # Parsed once per process: every command, snapshot and study check validates, and the
    # YAML parse costs more than the validation. Never handed out to be changed.
    return yaml.safe_load(resources.files("pipeline").joinpath("schemas/config.schema.yaml").read_text())


def schema() -> dict:
    """The configuration schema as a dict (a copy: change it as you like)."""
    return copy.deepcopy(_parsed_schema())


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


def _is_finite_number(checker, instance) -> bool:
    # YAML reads .inf and .nan as floats, which jsonschema counts as numbers, and NaN passes
    # every minimum and maximum: learning_rate: .inf trained to NaN weights and exited 0,
    # charm_fraction: .nan made every rejection inf. No setting of ours means infinity.
    return (isinstance(instance, (int, float)) and not isinstance(instance, bool)
            and math.isfinite(instance))


_DefaultingValidator = validators.extend(
    _with_defaults(Draft202012Validator),
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_finite_number}),
)


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


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


#: The password of a URI's user information (``scheme://user:password@host``).
_URI_PASSWORD = re.compile(r"(://[^/@\s:]*):[^/@\s]*@")


def without_password(text: str) -> str:
    """``text`` with the password of every URI in it replaced by ``***``: error messages and
    logs quote settings, and a password must not reach them."""
    return _URI_PASSWORD.sub(r"\1:***@", text)


def _error_line(error, instance: Any, prefix: tuple = ()) -> str:
    """One error as "key: message", with the schema's ``x-hint`` for the failed keyword.

    ``x-hint`` maps a keyword (maximum, pattern, ...) to advice for the reader. For
    pattern and anyOf the hint replaces jsonschema's message, which would only quote the
    regex or say "not valid under any of the given schemas".
    """
    hint = error.schema.get("x-hint", {}).get(error.validator) if isinstance(error.schema, dict) else None
    if error.validator == "type" and _non_finite(error.instance):
        hint = "expected a finite number: .inf and .nan are not settings"
    elif error.validator == "type" and isinstance(error.instance, float) and "integer" in error.validator_value:
        hint = "write whole numbers without a decimal point"
    if hint and error.validator in ("pattern", "anyOf"):
        message = f"{error.instance!r}: {hint}"
    else:
        message = f"{error.message} ({hint})" if hint else error.message
    return without_password(f"  {_key_path(error, instance, prefix)}: {message}")


def validated(instance: Mapping[str, Any] | None, source: str = "config", section: str | None = None) -> dict:
    """A copy of ``instance`` validated against the schema, or against one top-level
    ``section`` of it (``calorimeter``, for code that builds a section alone), with every
    default filled in; ConfigError naming ``source`` and listing every offending key."""
    resolved = copy.deepcopy(dict(instance or {}))
    whole = _parsed_schema()
    subschema, prefix = (whole, ()) if section is None else (whole["properties"][section], (section,))
    errors = sorted(_DefaultingValidator(subschema).iter_errors(resolved),
                    key=lambda e: list(map(str, e.absolute_path)))
    # A non-finite value is reported once, as not a number, not again against its limits.
    errors = [e for e in errors if not _non_finite(e.instance) or e.validator == "type"]
    if errors:
        raise ConfigError(f"{source}: invalid configuration:\n"
                          + "\n".join(_error_line(e, resolved, prefix) for e in errors))
    return resolved


def validate_section(name: str, settings: Mapping[str, Any] | None, source: str = "config") -> dict:
    """One top-level section validated against its part of the schema (``validated``)."""
    return validated(settings, source, section=name)
