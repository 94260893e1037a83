"""Nested training subsets: the first ``fraction`` of one seeded permutation of a study's
training jets, so that every smaller subset lies inside every larger one (a curve's points
differ by the added jets only, not by a new draw). The subset keeps the file's format, its
attributes (the vertex finders' feature standardisation among them) and its row order (the
track graphs' order by track count, which batches with little padding); at fraction 1 it is
the training file itself, row for row. Read and written in chunks of ROWS_PER_CHUNK jets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.io.hdf5 import FileSchema, RaggedReader, RaggedWriter, read_tree, select_tree
from pipeline.seeds import derive_seed

ROWS_PER_CHUNK = 20_000


def subset_size(n_jets: int, fraction: float) -> int:
    """Jets in the subset of ``fraction`` of ``n_jets`` (at least one)."""
    return max(1, int(round(fraction * n_jets)))


def subset_rows(n_jets: int, fraction: float, seed: int) -> np.ndarray:
    """The sorted rows of the subset: the first subset_size of one permutation drawn from ``seed``."""
    order = np.random.Generator(np.random.PCG64(seed)).permutation(n_jets)
    return np.sort(order[: subset_size(n_jets, fraction)])


def write_subset(config: Mapping, study: str, schema: FileSchema, source: str | Path, output: str | Path,
                 fraction: float) -> int:
    """Write the ``fraction`` subset of the training file ``source`` (``schema``: the study's
    format, its first collection the jets) to ``output``. Returns the jets written."""
    with RaggedReader(source, schema) as reader:
        top = schema.collections[0].name
        n_jets = reader.n_rows(top)
        rows = subset_rows(n_jets, fraction, derive_seed(config["seed"], "learning_curves", study))
        attrs = {**reader.attrs, "learning_curve_fraction": fraction,
                 "learning_curve_source": json.dumps({"path": str(source), "jets": n_jets})}
        attrs.pop("complete", None)
        with RaggedWriter(output, schema, attrs) as writer:
            for start in range(0, n_jets, ROWS_PER_CHUNK):
                stop = min(start + ROWS_PER_CHUNK, n_jets)
                mine = rows[(rows >= start) & (rows < stop)] - start
                arrays, offsets = read_tree(reader, start, stop)
                writer.append(*select_tree(schema, arrays, offsets, mine))
    return len(rows)
