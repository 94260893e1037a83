"""Track sets for vertex finding: per-track features, standardised, with the truth partition.

``build_track_graphs`` turns a sample's train/val/test track_jets files (or the Set2Graph
data set's ROOT files, for a file sample: ``pipeline.datasets.set2graph``) into track_graphs
files: jets with min_tracks..max_tracks tracks, ordered by track count (so contiguous
slices batch with little padding), each track a feature vector standardised with the
training split's mean and standard deviation (stored in the files' attributes).
Jets are sorted by track count within chunks of JETS_PER_CHUNK, so memory stays flat.
The complete per-jet edge set is not stored: models build it on the fly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.config import config_hash, stage_config
from pipeline.datasets import dataset, describe
from pipeline.io.hdf5 import RaggedReader, RaggedWriter, parent_index, provenance_attrs, ragged_rows
from pipeline.simulation.formats import TRACK_JETS
from pipeline.simulation.kinematics import wrap_phi
from pipeline.studies.vertexing.formats import TRACK_FEATURES, TRACK_GRAPHS

SPLITS = ("train", "val", "test")
JETS_PER_CHUNK = 100_000


def track_features(tracks: Mapping[str, np.ndarray], jets: Mapping[str, np.ndarray], offsets: np.ndarray) -> np.ndarray:
    """(n_tracks, len(TRACK_FEATURES)) raw features of ragged tracks, in TRACK_FEATURES order.

    z0 is taken relative to the median z0 of the jet's tracks (a per-jet estimate of the
    primary vertex z: the beam spot is 45 mm long); angles relative to the jet axis are
    wrapped to [-pi, pi).
    """
    jet = parent_index(offsets)
    n = np.diff(offsets)
    # Per-jet median of z0 without a Python loop: sort by (jet, z0), take the middle.
    order = np.lexsort((tracks["z0"], jet))
    z_sorted = tracks["z0"][order].astype(np.float64)
    lower = offsets[:-1] + (n - 1) // 2
    upper = offsets[:-1] + n // 2
    has = n > 0
    median = np.zeros(len(n))
    median[has] = 0.5 * (z_sorted[lower[has]] + z_sorted[upper[has]])
    z0 = tracks["z0"] - median[jet]
    jet_pt = jets["pt"][jet]
    columns = {
        "d0": tracks["d0"],
        "z0": z0,
        "phi": tracks["phi"],
        "cot_theta": 1.0 / np.tan(tracks["theta"]),
        "log_pt": np.log(tracks["pt"]),
        "charge": tracks["charge"],
        "delta_phi": wrap_phi(tracks["phi"] - jets["phi"][jet]),
        "delta_eta": tracks["eta"] - jets["eta"][jet],
        "pt_fraction": tracks["pt"] / jet_pt,
        "d0_significance": tracks["d0"] / tracks["sigma_d0"],
        "z0_significance": z0 / tracks["sigma_z0"],
        "log_sigma_d0": np.log(tracks["sigma_d0"]),
        "log_sigma_z0": np.log(tracks["sigma_z0"]),
        "log_sigma_phi": np.log(tracks["sigma_phi"]),
        "log_sigma_theta": np.log(tracks["sigma_theta"]),
        "log_sigma_qoverp": np.log(tracks["sigma_qoverp"]),
        "jet_log_pt": np.log(jet_pt),
        "jet_eta": jets["eta"][jet],
        "jet_phi": jets["phi"][jet],
        "jet_mass": jets["mass"][jet],
    }
    return np.stack([np.asarray(columns[name], np.float64) for name in TRACK_FEATURES], axis=1)


def _jet_chunks(config: Mapping, sample: str, path: str | Path):
    """Yield (jets, tracks, offsets, first jet row) of one split file in chunks of
    JETS_PER_CHUNK jets: a track_jets file of a generated sample, or, for a file sample of
    the Set2Graph jets, one of its ROOT files (``pipeline.datasets.set2graph``)."""
    found = dataset(config["samples"][sample])
    if found is None:
        with RaggedReader(path, TRACK_JETS) as reader:
            for start in range(0, reader.n_rows("jets"), JETS_PER_CHUNK):
                stop = min(start + JETS_PER_CHUNK, reader.n_rows("jets"))
                tracks, offsets = reader.read_children("tracks", start, stop)
                yield reader.read("jets", None, start, stop), tracks, offsets, start
    else:
        with found.open(path) as reader:
            for start in range(0, reader.n_jets, JETS_PER_CHUNK):
                yield *reader.track_sets(start, start + JETS_PER_CHUNK, config["tracker"]["resolution"]), start


def _selected_chunks(chunks, min_tracks: int, max_tracks: int):
    """Yield (jets, tracks, offsets, jet rows) of the jets with min..max tracks of each chunk."""
    for jets, tracks, offsets, start in chunks:
        n = np.diff(offsets)
        keep = np.flatnonzero((n >= min_tracks) & (n <= max_tracks))
        rows = ragged_rows(offsets, keep)
        kept_offsets = np.concatenate([[0], np.cumsum(n[keep])])
        yield ({k: v[keep] for k, v in jets.items()}, {k: v[rows] for k, v in tracks.items()},
               kept_offsets, start + keep)


def feature_statistics(config: Mapping, sample: str, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of every feature over the selected jets' tracks of a file."""
    min_tracks, max_tracks = config["vertexing"]["min_tracks"], config["vertexing"]["max_tracks"]
    total = np.zeros(len(TRACK_FEATURES))
    total_sq = np.zeros(len(TRACK_FEATURES))
    count = 0
    for jets, tracks, offsets, _ in _selected_chunks(_jet_chunks(config, sample, path), min_tracks, max_tracks):
        x = track_features(tracks, jets, offsets)
        total += x.sum(axis=0)
        total_sq += (x**2).sum(axis=0)
        count += len(x)
    if count == 0:
        raise ValueError(f"{path}: no jets with {min_tracks} to {max_tracks} tracks to standardise on")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std[std == 0] = 1.0  # a constant feature stays constant (0) instead of NaN
    return mean, std


def build_track_graphs(config: Mapping, sample: str, inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path]) -> dict[str, int]:
    """Write the track_graphs files of a sample's splits; returns jets per split."""
    settings = config["vertexing"]
    lo, hi = settings["min_tracks"], settings["max_tracks"]
    missing = [name for name in SPLITS if name not in inputs or name not in outputs]
    if missing:
        raise ValueError(f"build_track_graphs: no input or output path for splits {missing}")
    found = dataset(config["samples"][sample])
    if found:  # every file's layout, before any work
        for split in SPLITS:
            found.open(inputs[split]).close()
    mean, std = feature_statistics(config, sample, inputs["train"])
    # A public data set's tracks take their errors from the tracker's resolution settings.
    stage = stage_config(config, sample, "vertexing", *(("tracker",) if found else ()))
    counts = {}
    for split in SPLITS:
        counts[split] = 0
        attrs = provenance_attrs(stage, config_hash(stage), config["seed"])
        attrs.update(sample=sample, split=split, source=str(inputs[split]), dataset=describe(config, sample),
                     feature_names=json.dumps(list(TRACK_FEATURES)),
                     feature_mean=mean, feature_std=std, min_tracks=lo, max_tracks=hi)
        with RaggedWriter(outputs[split], TRACK_GRAPHS, attrs) as writer:
            for jets, tracks, offsets, source in _selected_chunks(_jet_chunks(config, sample, inputs[split]), lo, hi):
                features = ((track_features(tracks, jets, offsets) - mean) / std).astype(np.float32)
                n_tracks = np.diff(offsets)
                # Order each chunk's jets by track count, so that contiguous slices
                # batch with little padding; memory stays at one chunk.
                order = np.argsort(n_tracks, kind="stable")
                rows = ragged_rows(offsets, order)
                writer.append(
                    {"jets": {**{k: jets[k][order] for k in ("pt", "eta", "phi", "mass", "flavour")},
                              "n_tracks": n_tracks[order], "source_jet": source[order]},
                     "tracks": {"features": features[rows], "vertex": tracks["vertex"][rows]}},
                    {"tracks": n_tracks[order]},
                )
                counts[split] += len(order)
    return counts
