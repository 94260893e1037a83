"""Streaming the particle-flow study's images into dense batches (NumPy; ``data.py`` hands
them to the networks as tensors, the baseline's calibration reads them without torch).

A batch is a contiguous slice of events of a particle_flow_images file (gun events are
independent, so file order is as good as any), read in one go: the events' track and the
detector cells of their topo-clusters, scattered into dense per-layer images. Only the
cell offsets are kept in memory, so memory stays flat however large the file is.

Batch contents (``ImageBatches``), B events:

* ``layers``: per layer (B, n_eta, n_phi) measured energy [GeV] of topo-cluster cells, 0 elsewhere;
* ``track``: (B, fine, fine) zero but for one pixel at the track's extrapolated position
  in the second EM layer (the layer of the EM shower maximum), holding the track's
  momentum [GeV] (all zero without a track), as the authors' seventh image channel;
* ``fraction``: per layer (B, n_eta, n_phi) the target: true neutral / true total deposit
  of each topo-cluster cell (0 where nothing was deposited);
* ``weight``: per layer the loss weight, the cell's true total deposit [GeV];
* ``row``: (B,) the events' rows in the file;
* with ``evaluation``: ``cluster``, per layer (B, n_eta, n_phi) int the topo-cluster of
  each cell (-1 none), and ``events``, the events' truth and track fields (numpy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.io.hdf5 import DataFileError, LazyFile, RaggedReader
from pipeline.simulation.window_geometry import WindowGeometry
from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES

#: The layer whose extrapolated track position makes the track image (em2).
TRACK_LAYER = 1
#: What ``dense_batch`` reads of the cells and of the events.
CELL_FIELDS = ("layer", "ieta", "iphi", "energy", "energy_charged", "energy_neutral")
EVENT_FIELDS = ("has_track", "track_p", "track_layer_eta", "track_layer_phi")
#: What evaluation reads of the events besides: the true pions.
_TRUTH_FIELDS = ("charged_energy", "neutral_energy", "charged_eta", "charged_phi", "neutral_eta", "neutral_phi")


def file_geometry(reader: RaggedReader) -> tuple[list[tuple[int, int]], int, tuple[float, float]]:
    """(layer shapes, fine cells per side, window) of an open particle_flow_images file,
    from the config it was written with (image shards and split files both store it)."""
    try:
        geometry = WindowGeometry.from_config(reader.config)
    except (KeyError, TypeError, ValueError) as err:
        raise DataFileError(f"{reader.path}: its stored config has no usable particle_flow.calorimeter "
                            f"section ({err!r}); expected a file written by particle_flow build or split") from None
    return geometry.shapes, geometry.fine, geometry.window


def dense_batch(events: Mapping[str, np.ndarray], cells: Mapping[str, np.ndarray], cell_event: np.ndarray,
                shapes: list[tuple[int, int]], fine: int, window: tuple[float, float]) -> dict[str, object]:
    """The dense batch (module docstring) of B events from their sparse cells.

    events: the EVENT_FIELDS, (B,) or (B, n_layers); cells: the CELL_FIELDS of their
    cells, (n_cells,) each; cell_event: (n_cells,) each cell's event in the batch.
    """
    n = len(events["has_track"])
    layer = np.asarray(cells["layer"])
    tot = np.asarray(cells["energy_charged"], np.float32) + np.asarray(cells["energy_neutral"], np.float32)
    fraction = np.where(tot > 0, np.asarray(cells["energy_neutral"], np.float32) / np.where(tot > 0, tot, 1), 0)
    out: dict[str, object] = {"layers": [], "fraction": [], "weight": []}
    for index, shape in enumerate(shapes):
        sel = layer == index
        where = (cell_event[sel], np.asarray(cells["ieta"])[sel].astype(np.int64),
                 np.asarray(cells["iphi"])[sel].astype(np.int64))
        for key, values in (("layers", cells["energy"]), ("fraction", fraction), ("weight", np.maximum(tot, 0))):
            image = np.zeros((n, *shape), np.float32)
            image[where] = np.asarray(values, np.float32)[sel]
            out[key].append(image)
    track = np.zeros((n, fine, fine), np.float32)
    has = np.asarray(events["has_track"]) == 1
    eta = np.asarray(events["track_layer_eta"])[:, TRACK_LAYER]
    phi = np.asarray(events["track_layer_phi"])[:, TRACK_LAYER]
    with np.errstate(invalid="ignore"):
        ieta = np.floor((eta / window[0] + 0.5) * fine)
        iphi = np.floor((phi / window[1] + 0.5) * fine)
        inside = has & (ieta >= 0) & (ieta < fine) & (iphi >= 0) & (iphi < fine)
    rows = np.flatnonzero(inside)
    track[rows, ieta[rows].astype(np.int64), iphi[rows].astype(np.int64)] = np.asarray(events["track_p"])[rows]
    out["track"] = track
    return out


class ImageBatches(LazyFile):
    """Item i: the dense batch (module docstring) of events [i * batch_size, (i + 1) * batch_size) of a file."""

    def __init__(self, path: str | Path, batch_size: int, evaluation: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.path = Path(path)
        with RaggedReader(self.path, PARTICLE_FLOW_IMAGES) as reader:  # checks the schema and its version
            self.shapes, self.fine, self.window = file_geometry(reader)
            self.n_events = reader.n_rows("events")
            #: (n_events + 1,) cell offsets: the only per-event state kept in memory.
            self.offsets = reader.offsets("cells")
        if self.n_events == 0:
            raise ValueError(f"{self.path}: no events to stream")
        self.batch_size = batch_size
        self.evaluation = evaluation

    def __len__(self) -> int:
        return -(-self.n_events // self.batch_size)

    def __getitem__(self, index: int) -> dict[str, object]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start, stop = index * self.batch_size, min((index + 1) * self.batch_size, self.n_events)
        h5 = self._open()
        event_fields = EVENT_FIELDS + (_TRUTH_FIELDS if self.evaluation else ())
        c0, c1 = int(self.offsets[start]), int(self.offsets[stop])
        with self._reading(f"events {start}:{stop}"):
            events = {key: h5["events"][key][start:stop] for key in event_fields}
            cells = {key: h5["cells"][key][c0:c1] for key in CELL_FIELDS + (("cluster",) if self.evaluation else ())}
        cell_event = np.repeat(np.arange(stop - start), np.diff(self.offsets[start : stop + 1]))
        batch = dense_batch(events, cells, cell_event, self.shapes, self.fine, self.window)
        batch["row"] = np.arange(start, stop)
        if self.evaluation:
            batch["events"] = events
            batch["cluster"] = []
            for index, shape in enumerate(self.shapes):
                sel = cells["layer"] == index
                image = np.full((stop - start, *shape), -1, np.int32)
                image[cell_event[sel], cells["ieta"][sel], cells["iphi"][sel]] = cells["cluster"][sel]
                batch["cluster"].append(image)
        return batch
