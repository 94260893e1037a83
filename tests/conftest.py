"""Shared fixtures: one tiny but realistic ttbar data set per test session.

Pythia, FastJet and the tracker run once (``pipeline.tiny.write_tiny_dataset``); the
tracker and physics tests read the resulting files. 600 events take a few seconds and
give about 3000 jets and 20 000 tracks, enough for the statistical checks.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline.io.hdf5 import RaggedReader, parent_index, read_tree
from pipeline.simulation.formats import PARTICLE_JETS, TRACK_JETS
from pipeline.tiny import tiny_config, write_tiny_dataset, write_tiny_track_graphs

#: Events in the session's data set (ttbar at 13 TeV, the schema's default sqrt_s).
TINY_EVENTS = 600
#: Global seed of that data set; override (PIPELINE_TEST_SEED=...) to check that the
#: statistical tests hold for other samples too.
TINY_SEED = int(os.environ.get("PIPELINE_TEST_SEED", "7"))


@pytest.fixture(scope="session")
def tiny_config_session() -> dict:
    return tiny_config(events_per_shard=TINY_EVENTS, shards=1, seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory, tiny_config_session) -> dict:
    """{"particle_jets": path, "track_jets": path} of one generated and tracked shard."""
    directory = tmp_path_factory.mktemp("tiny_dataset")
    return write_tiny_dataset(directory, tiny_config_session)


def _read_all(path, schema):
    with RaggedReader(path, schema) as reader:
        arrays, offsets = read_tree(reader, 0, reader.n_rows("events"))
        attrs = reader.attrs
    # Row -> parent row maps, handy for per-event / per-jet checks.
    parents = {name: parent_index(off) for name, off in offsets.items()}
    return {"arrays": arrays, "offsets": offsets, "parent": parents, "attrs": attrs}


@pytest.fixture(scope="session")
def track_data(tiny_files) -> dict:
    """The whole track_jets file in memory: arrays, offsets and parent maps."""
    return _read_all(tiny_files["track_jets"], TRACK_JETS)


@pytest.fixture(scope="session")
def particle_data(tiny_files) -> dict:
    """The whole particle_jets file in memory: arrays, offsets and parent maps."""
    return _read_all(tiny_files["particle_jets"], PARTICLE_JETS)


@pytest.fixture(scope="session")
def track_graphs(tmp_path_factory, tiny_config_session, tiny_files) -> dict:
    """track_graphs files (train, val, test) of the session's data set."""
    return write_tiny_track_graphs(tmp_path_factory.mktemp("track_graphs"), tiny_config_session,
                                   tiny_files["track_jets"])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
