"""Tiny, realistic files of every schema, made by the real chain (no stored fixtures).

Tests and examples call ``write_tiny_dataset``; it runs Pythia, FastJet and the tracker
on a few events, so the files are as realistic as the workflow's own. The tiny run of the
whole workflow is a file, ``.test/config/config.yaml``; ``tiny_workflow_config`` reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from pipeline.run_config import resolve_config
from pipeline.simulation.generation import generate_shard
from pipeline.simulation.tracker_stage import track_shard


def tiny_config(events_per_shard: int = 20, shards: int = 2, seed: int = 7, process: str = "ttbar") -> dict:
    """A resolved config with one small sample named ``tiny``."""
    return resolve_config(
        {
            "seed": seed,
            "samples": {
                "tiny": {"process": process, "events_per_shard": events_per_shard,
                         "shards": shards, "batch_size": min(events_per_shard, 100)}
            },
        },
        source="tiny_config",
    )


def write_tiny_dataset(directory: str | Path, config: dict | None = None, shard: int = 0) -> dict[str, Path]:
    """Generate and track one shard of ``config`` (default: tiny_config()) into directory.

    Returns {"particle_jets": path, "track_jets": path}.
    """
    config = config or tiny_config()
    sample = next(iter(config["samples"]))
    directory = Path(directory)
    generated = directory / f"{sample}_generated_{shard}.h5"
    tracks = directory / f"{sample}_tracks_{shard}.h5"
    generate_shard(config, sample, shard, generated, progress=False)
    track_shard(config, generated, tracks, progress=False)
    return {"particle_jets": generated, "track_jets": tracks}


def write_tiny_track_graphs(directory: str | Path, config: dict, track_jets: str | Path) -> dict[str, Path]:
    """Split a track_jets file of ``config``'s first sample (``write_tiny_dataset``) and
    build its track graphs, the vertex finders' and the flavour tagger's input, in directory.

    Returns {"train": path, "val": path, "test": path} of the track_graphs files.
    """
    from pipeline.simulation.split import split_sample
    from pipeline.studies.vertexing.features import build_track_graphs

    sample = next(iter(config["samples"]))
    directory = Path(directory)
    splits = {name: directory / f"{name}.h5" for name in ("train", "val", "test")}
    split_sample(config, sample, [track_jets], splits)
    graphs = {name: directory / f"graphs_{name}.h5" for name in splits}
    build_track_graphs(config, sample, splits, graphs)
    return graphs


#: The tiny configuration of the whole DAG, a file at the repository root (``.test/``, where
#: the Snakemake workflow catalog looks), found from the package's source tree.
TINY_WORKFLOW_CONFIG = Path(__file__).resolve().parents[2] / ".test" / "config" / "config.yaml"


def tiny_workflow_config() -> dict:
    """The raw config of the smallest run of the whole default DAG (a few minutes on two
    cores), read from ``.test/config/config.yaml`` (TINY_WORKFLOW_CONFIG): a 60-event
    ttbar sample for vertexing and flavour tagging, 80 boosted top and 80 QCD events for
    the jet-image study, 60 pi+ pi0 and 40 pi+ gun events for the particle flow, 40 pi0 for
    the super-resolution (with the pi+ pi0 events), small
    networks, two epochs. The tests' and the Slurm benchmark's
    end-to-end runs use it; a user runs it with
    ``snakemake --configfile .test/config/config.yaml --directory <dir>``.

    A new dict on every call (callers may change it). FileNotFoundError, naming the path,
    where the package is installed without its source tree.
    """
    if not TINY_WORKFLOW_CONFIG.is_file():
        raise FileNotFoundError(f"{TINY_WORKFLOW_CONFIG}: the tiny workflow config is a file of the repository "
                                "(.test/config/config.yaml); install the package from a checkout (pip install -e .)")
    return yaml.safe_load(TINY_WORKFLOW_CONFIG.read_text())


#: Constituent columns of the Top Quark Tagging Reference Dataset's files (per constituent E, PX, PY, PZ).
TOP_TAGGING_CONSTITUENTS = 200


def top_tagging_frame(n_jets: int, seed: int, signal_fraction: float = 0.5):
    """A pandas DataFrame of ``n_jets`` synthetic jets in the Top Quark Tagging Reference
    Dataset's columns (``pipeline.datasets.top_tagging``): E_i, PX_i, PY_i, PZ_i for 200
    constituents ordered by pT and zero-padded, truthE..truthPZ, ttv, is_signal_new.

    The layout is exact, the physics a caricature: 550-650 GeV jets at |eta| < 2 whose
    massless constituents lie around three prongs 0.3-0.7 from the axis (top, 40-80 constituents)
    or one hard prong with soft radiation (QCD, 20-60), so a tagger can learn them.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    label = (rng.random(n_jets) < signal_fraction).astype(np.int64)
    jet_pt = rng.uniform(550.0, 650.0, n_jets)
    jet_eta = rng.uniform(-2.0, 2.0, n_jets)
    jet_phi = rng.uniform(-np.pi, np.pi, n_jets)
    m = TOP_TAGGING_CONSTITUENTS
    n_parts = np.where(label == 1, rng.integers(40, 81, n_jets), rng.integers(20, 61, n_jets))
    # Prong of each constituent: top jets share three prongs, QCD jets have one hard core (prong 0).
    prong_pt = np.where(label[:, None] == 1, rng.dirichlet([3.0, 2.0, 2.0], n_jets), [[0.9, 0.05, 0.05]])
    prong_angle = rng.uniform(0, 2 * np.pi, (n_jets, 3))
    prong_distance = np.where(label[:, None] == 1, rng.uniform(0.3, 0.7, (n_jets, 3)),
                              rng.uniform(0.0, 0.5, (n_jets, 3)))
    prong_distance[:, 0] *= np.where(label == 1, 0.3, 0.05)
    prong = rng.choice(3, (n_jets, m), p=[0.5, 0.25, 0.25])
    share = rng.exponential(1.0, (n_jets, m)) * prong_pt[np.arange(n_jets)[:, None], prong]
    real = np.arange(m)[None, :] < n_parts[:, None]
    share = np.where(real, share, 0.0)
    pt = share / share.sum(axis=1, keepdims=True) * jet_pt[:, None]
    spread = np.where(label[:, None] == 1, 0.04, 0.05)
    rows = np.arange(n_jets)[:, None]
    eta = (jet_eta[:, None] + prong_distance[rows, prong] * np.cos(prong_angle[rows, prong])
           + rng.normal(0, 1, (n_jets, m)) * spread)
    phi = (jet_phi[:, None] + prong_distance[rows, prong] * np.sin(prong_angle[rows, prong])
           + rng.normal(0, 1, (n_jets, m)) * spread)
    order = np.argsort(-pt, axis=1)
    pt, eta, phi = (np.take_along_axis(a, order, axis=1) for a in (pt, eta, phi))
    columns = {"E": pt * np.cosh(eta), "PX": pt * np.cos(phi), "PY": pt * np.sin(phi), "PZ": pt * np.sinh(eta)}
    data = {f"{q}_{i}": np.where(pt[:, i] > 0, columns[q][:, i], 0.0).astype(np.float32)
            for i in range(m) for q in ("E", "PX", "PY", "PZ")}
    truth = {q: np.where(label == 1, columns[q.removeprefix("truth")].sum(axis=1), 0.0).astype(np.float32)
             for q in ("truthE", "truthPX", "truthPY", "truthPZ")}
    return pd.DataFrame({**data, **truth, "ttv": np.zeros(n_jets, np.int64), "is_signal_new": label})


def write_top_tagging_files(directory: str | Path, jets: dict[str, int], seed: int = 1, layout: str = "table",
                            rows_per_write: int = 50_000) -> Path:
    """train.h5, val.h5 and test.h5 of ``jets`` {split: n} synthetic jets (``top_tagging_frame``)
    in the reference data set's layout, written by pandas under key ``table`` in pandas'
    ``layout`` ("table", appended in pieces of ``rows_per_write`` jets, or "fixed", at once).
    Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = {"train": "train.h5", "val": "val.h5", "test": "test.h5"}
    for index, (split, n) in enumerate(jets.items()):
        path = directory / names[split]
        path.unlink(missing_ok=True)
        if layout == "fixed":
            top_tagging_frame(n, seed + 1000 * index).to_hdf(path, key="table", format="fixed")
            continue
        for start in range(0, n, rows_per_write):
            frame = top_tagging_frame(min(rows_per_write, n - start), seed + 1000 * index + start)
            frame.index += start
            frame.to_hdf(path, key="table", format="table", append=True)
    return directory


def write_set2graph_files(directory: str | Path, track_jets: str | Path, seed: int = 1) -> Path:
    """training_data.root, valid_data.root and test_data.root in the Set2Graph data set's
    layout (``pipeline.datasets.set2graph``), written by uproot from the jets of a
    track_jets file (``write_tiny_dataset``), a third in each: per-track jagged branches
    trk_d0, trk_z0 (from the true primary vertex), trk_phi, trk_ctgtheta, trk_pt,
    trk_charge, trk_vtx_index, per-jet jet_pt, jet_eta, jet_phi, jet_M, jet_flav. Each
    jet's tracks are written in a random order, since the real files' order is not
    documented. Returns the directory."""
    import awkward as ak
    import uproot

    from pipeline.io.hdf5 import RaggedReader, parent_index
    from pipeline.simulation.formats import TRACK_JETS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with RaggedReader(track_jets, TRACK_JETS) as reader:
        n_events, n_jets = reader.n_rows("events"), reader.n_rows("jets")
        jets, jet_offsets = reader.read_children("jets", 0, n_events)
        tracks, offsets = reader.read_children("tracks", 0, n_jets)
        pv_z = reader.read("events", ["pv_z"], 0, n_events)["pv_z"]
    rng = np.random.default_rng(seed)
    owner = parent_index(offsets)
    order = np.lexsort((rng.random(len(owner)), owner))  # tracks shuffled within each jet
    tracks = {name: values[order] for name, values in tracks.items()}
    track_branches = {
        "trk_d0": tracks["d0"], "trk_z0": tracks["z0"] - pv_z[parent_index(jet_offsets)][owner],
        "trk_phi": tracks["phi"], "trk_ctgtheta": 1.0 / np.tan(tracks["theta"]), "trk_pt": tracks["pt"],
        "trk_charge": tracks["charge"].astype(np.float32), "trk_vtx_index": tracks["vertex"].astype(np.int32),
    }
    jet_branches = {"jet_pt": jets["pt"], "jet_eta": jets["eta"], "jet_phi": jets["phi"], "jet_M": jets["mass"],
                    "jet_flav": jets["flavour"].astype(np.int32)}
    n = len(jets["pt"])
    names = {"train": "training_data.root", "val": "valid_data.root", "test": "test_data.root"}
    for index, split in enumerate(names):
        lo, hi = index * n // 3, (index + 1) * n // 3
        counts = np.diff(offsets[lo:hi + 1])
        branches = {name: ak.unflatten(np.asarray(values[offsets[lo]:offsets[hi]], np.float32
                                                  if name != "trk_vtx_index" else np.int32), counts)
                    for name, values in track_branches.items()}
        branches.update({name: np.asarray(values[lo:hi], np.int32 if name == "jet_flav" else np.float32)
                         for name, values in jet_branches.items()})
        with uproot.recreate(directory / names[split]) as f:
            # mktree: a TTree, as the authors' files hold (a dict assigned to a key would be an RNTuple).
            tree = f.mktree("tree", {name: (("var * " + str(v.layout.content.dtype)) if name.startswith("trk_")
                                            else v.dtype) for name, v in branches.items()})
            tree.extend(branches)
    return directory
