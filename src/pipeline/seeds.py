"""Every random stream of the pipeline is seeded from the config's global seed and the
stream's names: the same config gives the same data and the same trainings, on one process
or many, in any order of jobs."""

from __future__ import annotations

import hashlib

#: Pythia's ``Random:seed`` accepts 0 ... 900 000 000 (0 would mean "use the time").
PYTHIA_MAX_SEED = 900_000_000


def derive_seed(global_seed: int, *names: object, maximum: int = PYTHIA_MAX_SEED) -> int:
    """A seed in [1, maximum] derived from the global seed and a stream's names.

    ``derive_seed(seed, "ttbar", 3, "pythia")`` is stable across runs and machines and
    differs between samples, shards and streams.
    """
    key = ":".join([str(global_seed), *map(str, names)])
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") % maximum + 1
