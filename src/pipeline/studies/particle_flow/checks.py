"""The particle-flow study's cross-checks of its config section, beyond the schema
(``pipeline.config`` runs every study's ``check`` on the resolved config)."""

from __future__ import annotations

from typing import Any, Mapping

from pipeline.simulation.window_geometry import WindowGeometry


def check(config: Mapping[str, Any]) -> None:
    """ValueError naming the key: the study's samples must be particle guns, its window's cells nest (WindowGeometry)."""
    for role in ("sample", "calibration"):
        name = config["particle_flow"][role]
        if name in config["samples"] and config["samples"][name].get("process") != "particle_gun":
            raise ValueError(f"particle_flow.{role}: sample {name!r} has process "
                             f"{config['samples'][name].get('process', 'none: a public data set')!r}; expected a particle_gun sample")
    WindowGeometry.from_config(config)
