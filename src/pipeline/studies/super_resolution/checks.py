"""The super-resolution study's cross-checks of its config section, beyond the schema
(``pipeline.config`` runs every study's ``check`` on the resolved config)."""

from __future__ import annotations

from typing import Any, Mapping

from pipeline.studies.super_resolution.detector import detector_config


def check(config: Mapping[str, Any]) -> None:
    """ValueError naming the key: the samples are particle guns, the granularity nests in
    the fine cells, the physics layer is one of the calorimeter's."""
    section = config["super_resolution"]
    for role in ("sample", "pi0_sample"):
        name = section[role]
        if name in config["samples"] and config["samples"][name].get("process") != "particle_gun":
            raise ValueError(f"super_resolution.{role}: sample {name!r} has process "
                             f"{config['samples'][name].get('process', 'none: a public data set')!r}; expected a particle_gun sample")
    names = [layer["name"] for layer in config["particle_flow"]["calorimeter"]["layers"]]
    if section["physics"]["layer"] not in names:
        raise ValueError(f"super_resolution.physics.layer: {section['physics']['layer']!r} is not a layer of "
                         f"particle_flow.calorimeter; expected one of {names}")
    detector_config(config)
