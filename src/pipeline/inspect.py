"""Every file schema the package writes, by name: the simulation's and each study's
(``pipeline inspect`` and the tests that check every output read them)."""

from __future__ import annotations

from pipeline.io.hdf5 import FileSchema
from pipeline.simulation.formats import SCHEMAS as SIMULATION_SCHEMAS
from pipeline.studies import STUDIES, study_module


def file_schemas() -> dict[str, FileSchema]:
    schemas = dict(SIMULATION_SCHEMAS)
    for study in STUDIES:
        schemas.update(study_module(study, "formats").SCHEMAS)
    return schemas
