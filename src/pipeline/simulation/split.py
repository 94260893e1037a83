"""Train / validation / test splits of a sample's shards, by event (track_jets files by default).

Whole events go to one split (jets of one event are correlated). In each shard a
seeded permutation of its events assigns round(fraction * n) events to train and to
val, the rest to test, so the fractions are fixed and reruns agree.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.config import config_hash, stage_config
from pipeline.io.hdf5 import FileSchema, RaggedReader, RaggedWriter, provenance_attrs, read_tree, select_tree
from pipeline.seeds import derive_seed
from pipeline.simulation.formats import TRACK_JETS

SPLITS = ("train", "val", "test")
EVENTS_PER_CHUNK = 5000


def assign_events(n_events: int, fractions: Mapping[str, float], seed: int) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) of each of n_events events."""
    rng = np.random.Generator(np.random.PCG64(seed))
    n_train = int(round(fractions["train"] * n_events))
    n_val = min(int(round(fractions["val"] * n_events)), n_events - n_train)
    labels = np.full(n_events, 2, np.int8)
    order = rng.permutation(n_events)
    labels[order[:n_train]] = 0
    labels[order[n_train : n_train + n_val]] = 1
    return labels


def split_sample(config: Mapping, sample: str, inputs: Sequence[str | Path], outputs: Mapping[str, str | Path],
                 schema: FileSchema = TRACK_JETS, sections: Sequence[str] = ("split",)) -> dict[str, int]:
    """Write the train/val/test files of a sample from its shards (files of ``schema``,
    whose top-level collection is ``events``).

    outputs: {"train": path, "val": path, "test": path}; sections: the config sections
    stored with the sample's settings in the outputs. Returns events per split.
    """
    missing = set(SPLITS) - set(outputs)
    if missing:
        raise ValueError(f"split_sample: missing output paths for {sorted(missing)}")
    fractions = config["split"]
    stage = stage_config(config, sample, *sections)
    attrs = provenance_attrs(stage, config_hash(stage), config["seed"])
    attrs.update(sample=sample, fractions=json.dumps(dict(fractions)),
                 sources=json.dumps([str(p) for p in inputs]))
    n_events = dict.fromkeys(SPLITS, 0)
    with ExitStack() as stack:
        writers = {
            name: stack.enter_context(RaggedWriter(outputs[name], schema, {**attrs, "split": name}))
            for name in SPLITS
        }
        for path in inputs:
            with RaggedReader(path, schema) as reader:
                if str(reader.attrs["sample"]) != sample:
                    raise ValueError(f"{path}: holds sample {reader.attrs['sample']!r}, expected {sample!r}")
                shard = int(reader.attrs["shard"])
                total = reader.n_rows("events")
                labels = assign_events(total, fractions, derive_seed(config["seed"], sample, shard, "split"))
                for start in range(0, total, EVENTS_PER_CHUNK):
                    stop = min(start + EVENTS_PER_CHUNK, total)
                    arrays, offsets = read_tree(reader, start, stop)
                    for index, name in enumerate(SPLITS):
                        rows = np.flatnonzero(labels[start:stop] == index)
                        writers[name].append(*select_tree(schema, arrays, offsets, rows))
                        n_events[name] += len(rows)
    return n_events
