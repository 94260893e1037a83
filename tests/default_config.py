"""The configuration the code runs with when a config sets nothing but its one required
key: every setting at the schema's default (``schemas/config.schema.yaml``, the one source
of defaults). Tests that need a study's default network or detector take it from here,
through the studies' own readers of the config."""

from __future__ import annotations

import copy

from pipeline.config import validate_config

#: The schema requires at least one sample; everything else is its default.
MINIMAL = {"samples": {"ttbar": {"process": "ttbar"}}}
_RESOLVED = validate_config(MINIMAL)


def default_config() -> dict:
    """The resolved config of MINIMAL: a new dict on every call (callers may change it)."""
    return copy.deepcopy(_RESOLVED)


def default_optimiser() -> dict:
    """The schema's default learning rate and schedule, which every study's module takes."""
    return {key: _RESOLVED["training"][key] for key in ("learning_rate", "lr_schedule")}


def vertex_finder_training() -> dict:
    """A vertex finder's non-network settings by default: the optimiser's and ``vertexing.threshold``."""
    return {**default_optimiser(), "threshold": _RESOLVED["vertexing"]["threshold"]}


def particle_flow_shapes() -> list[tuple[int, int]]:
    """(n_eta, n_phi) of the particle-flow layers by default (``particle_flow.calorimeter.layers``)."""
    from pipeline.simulation.window_geometry import WindowGeometry

    return WindowGeometry.from_config(_RESOLVED).shapes


def super_resolution_shapes() -> list[tuple[int, int]]:
    """(n_eta, n_phi) of the super-resolution detector's layers by default (``super_resolution.granularity``)."""
    from pipeline.studies.super_resolution.train import detector_geometry

    return detector_geometry(_RESOLVED)[0]


def particle_flow_settings(method: str, **changes) -> dict:
    """The default network settings of a particle-flow method (``train.network_config``:
    ``particle_flow.cnn`` or ``graph`` with the calorimeter's fine and window), updated by ``changes``."""
    from pipeline.studies.particle_flow.train import network_config

    return {**network_config(_RESOLVED, method), **changes}


def super_resolution_settings(**changes) -> dict:
    """The default super-resolution network settings (``super_resolution.network``), updated by ``changes``."""
    return copy.deepcopy({**_RESOLVED["super_resolution"]["network"], **changes})
