"""The Set2Graph secondary-vertex jets (Shlomi et al., "Secondary vertex finding in jets with
neural networks", EPJC 81 (2021) 540; Zenodo record 4044628), read in chunks with uproot.

Layout, as the authors' loader (``dataloaders/jets_loader.py`` of jshlomi/SetToGraphPaper)
reads it: ROOT files with a TTree ``tree``, one entry per jet; per-track jagged branches
``trk_d0, trk_z0`` (mm), ``trk_phi`` (rad), ``trk_ctgtheta``, ``trk_pt`` (GeV),
``trk_charge`` and the per-track vertex label ``trk_vtx_index``; per-jet branches ``jet_pt``
(GeV), ``jet_eta``, ``jet_phi``, ``jet_M`` (GeV) and the flavour ``jet_flav`` (5 b, 4 c, 0
light). The files hold no track errors and no truth beyond the vertex labels.

The authors' loader sorts each jet's track features by pT but leaves the labels in file
order, so features and labels no longer belong to the same track. Here a track's features
and its label are read together and stay together: ``track_sets`` orders each jet's tracks
by decreasing pT (our files' convention) with one permutation for everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.simulation.tracker import resolutions

TREE = "tree"
#: Per-track branches and the dtype kinds accepted ("f" floating point, "iu" integers).
TRACK_BRANCHES = {"trk_d0": "f", "trk_z0": "f", "trk_phi": "f", "trk_ctgtheta": "f", "trk_pt": "f",
                  "trk_charge": "fiu", "trk_vtx_index": "fiu"}
#: Per-jet branches.
JET_BRANCHES = {"jet_pt": "f", "jet_eta": "f", "jet_phi": "f", "jet_M": "f", "jet_flav": "fiu"}
FLAVOURS = (0, 4, 5)


class Set2GraphFile:
    """One file of the data set. Opening it checks the layout: tree ``tree``, every branch
    of TRACK_BRANCHES jagged and of JET_BRANCHES flat, with an accepted dtype, at least one
    jet; ValueError naming the file and the branch otherwise.

    ``n_jets``; ``read(start, stop)``: the raw branches of jets start:stop, with the tracks
    of every jet checked to agree across branches.
    """

    def __init__(self, path: str | Path):
        import uproot  # here: the config and the Snakefile import the package, not uproot

        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such file")
        try:
            self._file = uproot.open(self.path)
        except Exception as error:  # uproot raises ValueError, OSError, ... for a non-ROOT file
            raise ValueError(f"{self.path}: not a ROOT file ({type(error).__name__}: {error})") from None
        try:
            self._check()
        except Exception:
            self._file.close()
            raise

    def _check(self) -> None:
        import uproot

        keys = [key.split(";")[0] for key in self._file.keys(recursive=False)]
        if TREE not in keys:
            raise ValueError(f"{self.path}: no TTree {TREE!r} (the data set's files hold one); found {keys}")
        self._tree = self._file[TREE]
        if not isinstance(self._tree, uproot.behaviors.TTree.TTree):
            raise ValueError(f"{self.path}: {TREE!r} is a {type(self._tree).__name__}, expected a TTree")
        branches = set(self._tree.keys())
        for name, kinds in {**TRACK_BRANCHES, **JET_BRANCHES}.items():
            if name not in branches:
                raise ValueError(f"{self.path}: TTree {TREE!r} has no branch {name!r} (expected per-track "
                                 f"{sorted(TRACK_BRANCHES)} and per-jet {sorted(JET_BRANCHES)})")
            interpretation = self._tree[name].interpretation
            jagged = isinstance(interpretation, uproot.interpretation.jagged.AsJagged)
            if jagged != (name in TRACK_BRANCHES):
                shape = "a jagged" if jagged else "a flat"
                expected = "one value per track" if name in TRACK_BRANCHES else "one value per jet"
                raise ValueError(f"{self.path}: branch {name!r} is {shape} array, expected {expected}")
            content = interpretation.content if jagged else interpretation
            dtype = getattr(content, "to_dtype", None)
            if dtype is None or dtype.kind not in kinds:
                raise ValueError(f"{self.path}: branch {name!r}: {interpretation}, expected "
                                 + ("floating point" if kinds == "f" else "numbers"))
        self.n_jets = int(self._tree.num_entries)
        if self.n_jets == 0:
            raise ValueError(f"{self.path}: TTree {TREE!r} holds no jets")

    def read(self, start: int, stop: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        """Jets start:stop as (jet branches {name: (n,)}, track branches {name: (n_tracks,)}
        flat in file order, offsets (n + 1,)). ValueError naming the file, the branch and
        the entry where a track branch has another number of tracks than trk_pt."""
        import awkward as ak

        stop = min(stop, self.n_jets)
        arrays = self._tree.arrays(list(TRACK_BRANCHES) + list(JET_BRANCHES), entry_start=start, entry_stop=stop,
                                   library="ak")
        counts = ak.to_numpy(ak.num(arrays["trk_pt"]))
        for name in TRACK_BRANCHES:
            other = ak.to_numpy(ak.num(arrays[name]))
            if not np.array_equal(other, counts):
                entry = start + int(np.flatnonzero(other != counts)[0])
                raise ValueError(f"{self.path}: branch {name!r} has {other[entry - start]} tracks in entry {entry}, "
                                 f"trk_pt {counts[entry - start]}")
        tracks = {name: ak.to_numpy(ak.flatten(arrays[name])) for name in TRACK_BRANCHES}
        jets = {name: ak.to_numpy(arrays[name]) for name in JET_BRANCHES}
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return jets, tracks, offsets

    def track_sets(self, start: int, stop: int, resolution: Mapping) -> tuple[dict, dict, np.ndarray]:
        """Jets start:stop in the fields of our track_jets files (``pipeline.simulation.formats``):
        jets {pt, eta, phi, mass, flavour}; tracks {d0, z0, phi, theta, pt, eta, charge,
        sigma_*, vertex}, each jet's tracks by decreasing pT with their labels (relabelled
        0, 1, ... in order of first appearance); offsets.

        The files hold no track errors: the sigma_* are our tracker model's resolution at
        the track's pT and theta (``resolution``: the tracker section's), which the
        classical finders and the significance features need; an assumption, not data.
        """
        jets, raw, offsets = self.read(start, stop)
        flavour = jets["jet_flav"]
        bad = np.flatnonzero(~np.isin(flavour, FLAVOURS))
        if len(bad):
            raise ValueError(f"{self.path}: branch 'jet_flav': {flavour[bad[0]].item()!r} in entry {start + bad[0]}, "
                             f"expected one of {FLAVOURS} (light, c, b)")
        label = raw["trk_vtx_index"]
        if label.dtype.kind == "f" and not np.array_equal(label, np.round(label)):
            entry = start + int(np.searchsorted(offsets, np.flatnonzero(label != np.round(label))[0], "right") - 1)
            raise ValueError(f"{self.path}: branch 'trk_vtx_index' has a non-integer label in entry {entry}")
        order = decreasing_pt_order(raw["trk_pt"], offsets)
        theta = np.arctan2(1.0, raw["trk_ctgtheta"][order].astype(np.float64))
        pt = raw["trk_pt"][order].astype(np.float64)
        sigma = resolutions(pt, theta, resolution)
        tracks = {
            "d0": raw["trk_d0"][order], "z0": raw["trk_z0"][order], "phi": raw["trk_phi"][order],
            "theta": theta, "pt": pt, "eta": np.arcsinh(raw["trk_ctgtheta"][order].astype(np.float64)),
            "charge": raw["trk_charge"][order],
            **dict(zip(("sigma_d0", "sigma_z0", "sigma_phi", "sigma_theta", "sigma_qoverp"), sigma)),
            "vertex": first_appearance_labels(label[order].astype(np.int64), offsets),
        }
        jets = {"pt": jets["jet_pt"], "eta": jets["jet_eta"], "phi": jets["jet_phi"], "mass": jets["jet_M"],
                "flavour": flavour.astype(np.int8)}
        return jets, tracks, offsets

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Set2GraphFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decreasing_pt_order(pt: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The permutation of flat ragged tracks that orders each set's tracks by decreasing pT
    (ties in file order); sets stay where they are."""
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return np.lexsort((-np.asarray(pt, np.float64), owner))


def first_appearance_labels(label: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Labels 0, 1, ... of each set's classes in order of first appearance within the set
    (the same partition as ``label``, which may use any integers)."""
    if len(label) == 0:
        return np.zeros(0, np.int32)
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    _, first, inverse = np.unique(np.stack([owner, label]), axis=1, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    ids = rank[inverse.ravel()]  # sets are contiguous, so a set's ids are consecutive, its first track's the lowest
    base = ids[offsets[:-1][np.diff(offsets) > 0]]
    return (ids - np.repeat(base, np.diff(offsets)[np.diff(offsets) > 0])).astype(np.int32)
