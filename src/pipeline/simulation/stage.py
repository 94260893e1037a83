"""The skeleton every per-shard stage shares (tracker, calorimeter, jet images): the files
of one shard of a sample in, one file out, in chunks of events.

It opens the inputs and checks they hold the same sample, shard and events; derives the
stage's random stream from the global seed, the sample, the shard and the stage's name
(so a stage reruns without the stages before it, and its stream does not depend on the
chunking); stores the part of the config the stage depends on and its provenance; and
streams chunks of events through the stage's ``process`` into the writer, with a
progress bar.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from tqdm import tqdm

from pipeline.config import config_hash, stage_config
from pipeline.io.hdf5 import FileSchema, RaggedReader, RaggedWriter, provenance_attrs
from pipeline.seeds import derive_seed

#: process(readers {input name: reader}, first event, end event, rng) -> (arrays, counts) for RaggedWriter.append
Process = Callable[[Mapping[str, RaggedReader], int, int, "np.random.Generator | None"], tuple[dict, dict]]


@dataclass(frozen=True)
class ShardStage:
    """A per-shard stage.

    name: its random stream (``derive_seed(seed, sample, shard, name)``) and progress label.
    sections: the config sections it depends on (stored in the output, with the sample's settings).
    output: the schema it writes.
    events_per_chunk: events read and processed at once.
    seeded: whether it draws random numbers (else the output records the global seed).
    """

    name: str
    sections: tuple[str, ...]
    output: FileSchema
    events_per_chunk: int
    seeded: bool = True

    def run(self, config: Mapping, inputs: Mapping[str, tuple[str | Path, FileSchema]], output: str | Path,
            process: Process, progress: bool = True,
            attrs: Callable[[Mapping[str, RaggedReader], str], Mapping] | None = None) -> dict[str, int]:
        """Run the stage over one shard. ``inputs``: {name: (path, schema)}, the first
        naming the sample and shard; ``attrs(readers, sample)``: the stage's own output
        attributes (may raise ValueError to refuse the input). Returns the rows written
        per output collection."""
        with ExitStack() as stack:
            readers = {name: stack.enter_context(RaggedReader(path, schema)) for name, (path, schema) in inputs.items()}
            sample, shard, n_events = self._same_shard(readers, inputs)
            extra = dict(attrs(readers, sample)) if attrs else {}
            seed = derive_seed(config["seed"], sample, shard, self.name) if self.seeded else config["seed"]
            rng = np.random.Generator(np.random.PCG64(seed)) if self.seeded else None
            stage = stage_config(config, sample, *self.sections)
            out_attrs = provenance_attrs(stage, config_hash(stage), seed)
            out_attrs.update(sample=sample, shard=shard, **extra)
            rows = {collection.name: 0 for collection in self.output.collections}
            with RaggedWriter(output, self.output, out_attrs) as writer:
                for start in tqdm(range(0, n_events, self.events_per_chunk), desc=f"{self.name} {sample}/{shard}",
                                  disable=not progress, mininterval=5.0):
                    stop = min(start + self.events_per_chunk, n_events)
                    arrays, counts = process(readers, start, stop, rng)
                    writer.append(arrays, counts)
                    for name in rows:
                        rows[name] += len(next(iter(arrays[name].values())))
        return rows

    @staticmethod
    def _same_shard(readers: Mapping[str, RaggedReader], inputs: Mapping) -> tuple[str, int, int]:
        """(sample, shard, events) of the inputs; ValueError naming the files where they differ."""
        (first, reader), *others = readers.items()
        sample, shard = str(reader.attrs["sample"]), int(reader.attrs["shard"])
        n_events = reader.n_rows("events")
        for name, other in others:
            path, first_path = inputs[name][0], inputs[first][0]
            if (str(other.attrs["sample"]), int(other.attrs["shard"])) != (sample, shard):
                raise ValueError(f"{path}: holds {other.attrs['sample']} shard {other.attrs['shard']}, "
                                 f"but {first_path} holds {sample} shard {shard}")
            if other.n_rows("events") != n_events:
                raise ValueError(f"{path}: {other.n_rows('events')} events, {first_path}: {n_events}")
        return sample, shard, n_events
