"""The super-resolution study's HDF5 formats: none of its own. Its images are the
particle-flow study's ``particle_flow_images`` (``pipeline.studies.particle_flow.formats``),
built with this study's detector cells (``detector.py``); each file's stored config says
which cells it holds, and the readers check it against the config they run with."""

from __future__ import annotations

#: This study's own file schemas, by name (its images are the particle-flow study's format).
SCHEMAS: dict = {}
