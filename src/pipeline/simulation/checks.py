"""Cross-checks of the simulation's settings beyond the schema: the calorimeter's geometry,
and what the generators would refuse or silently misread (Pythia's settings, the guns)."""

from __future__ import annotations

from typing import Any, Mapping

from pipeline.config import config_errors, generated
from pipeline.simulation.calorimeter_geometry import CalorimeterGeometry


def check_detectors(config: Mapping[str, Any]) -> None:
    """ValueError naming the key for calorimeter settings that do not fit together (the schema checked each key)."""
    CalorimeterGeometry.from_settings(config["calorimeter"])


def check_generators(config: Mapping[str, Any], source: str = "config") -> None:
    """ConfigError naming ``source``, the sample and the line for a ``pythia_settings`` value
    that Pythia would silently misread (``simulation.pythia.check_pythia_settings``), and
    naming the key (``samples.<name>.gun.particles[1].pdgid``) for a particle gun that
    ``simulation.gun.check_gun`` refuses: a PDG id Pythia does not know or a coloured one,
    an energy not above the mass, a reversed range, an offset from a particle that does not
    come before, both or neither of eta/phi and offset.

    Apart from ``pipeline.studies.resolve_config`` because it reads Pythia's settings database
    (half a second): the Snakefile, ``pipeline config`` and the generate command ask, not every job."""
    # Imported here: Pythia's bindings load only where the generators are checked.
    from pipeline.simulation.gun import check_gun
    from pipeline.simulation.pythia import check_pythia_settings, particle_data

    for name, sample in generated(config["samples"]).items():
        with config_errors(source):
            try:
                check_pythia_settings(sample["pythia_settings"])
            except ValueError as err:
                raise ValueError(f"samples.{name}.pythia_settings: {err}") from None
            if sample["process"] == "particle_gun":
                try:
                    check_gun(sample["gun"], particle_data())
                except ValueError as err:
                    raise ValueError(f"samples.{name}.gun.{err}") from None
