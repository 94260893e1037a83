"""Streaming the super-resolution study's images into dense batches (NumPy; ``data.py``
hands them to the networks as tensors, the interpolations and the evaluation read them
without torch).

The files are the particle-flow study's (``particle_flow_images``, written with this
study's detector, ``detector.build_shard``). A batch is a contiguous slice of events,
read in one go: their topo-cluster cells at the detector's granularity (the input), the
track, and their fine cells (the target), scattered into dense images. Only the two
cell offsets are kept in memory, so memory stays flat however large the file is.

Batch contents (``SuperResolutionBatches``), B events, L layers, F = fine:

* ``coarse``: per layer (B, n_eta, n_phi) float32, the measured energy [GeV] of the
  topo-cluster cells (with noise: can be slightly negative), 0 elsewhere: the detector
  readout (``particle_flow.batches.dense_batch``'s ``layers``);
* ``track``: (B, F, F) float32, the track's momentum [GeV] at its pixel in em2, 0
  elsewhere and without a track (``dense_batch``'s ``track``);
* ``fine``: (B, L, F, F) float32, the fine truth: every fine cell's sampling-smeared
  deposit [GeV] (``fine_cells.energy``, no noise), 0 elsewhere;
* ``row``: (B,) int64 the events' rows in the file;
* with ``evaluation``: ``fine_charged`` and ``fine_neutral``, (B, L, F, F) float32 the
  charged and the neutral pion's true deposits per fine cell [GeV]
  (``fine_cells.energy_charged``, ``energy_neutral``), and ``events``, a dict of (B,) NumPy
  event fields (``EVALUATION_FIELDS``).

Fine cell (i, j) lies in detector cell (i // fe, j // fp) of a layer with factors
(fe, fp) = (F // n_eta, F // n_phi); axis 0 is eta, axis 1 phi.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io.hdf5 import RaggedReader
from pipeline.simulation.window_geometry import WindowGeometry
from pipeline.studies.particle_flow.batches import CELL_FIELDS, EVENT_FIELDS, ImageBatches, dense_batch
from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES

#: The event fields of an evaluation batch: the window's centre, the true pions, the track flag.
EVALUATION_FIELDS = ("window_eta", "window_phi", "neutral_energy", "charged_energy", "neutral_eta", "neutral_phi",
                     "has_track")
_FINE_FIELDS = ("layer", "ieta", "iphi", "energy")


class SuperResolutionBatches(ImageBatches):
    """Item i: the dense batch (module docstring) of events [i * batch_size, (i + 1) * batch_size) of a file.

    Attributes: those of ``particle_flow.batches.ImageBatches`` (``shapes`` [(n_eta, n_phi)]
    per layer, ``fine`` (F), ``window`` (size_eta, size_phi) [rad], ``n_events``,
    ``offsets``, ``batch_size``, ``evaluation``), and ``factors`` [(F // n_eta, F // n_phi)]
    per layer, ``layer_names``, ``fine_offsets``.
    """

    def __init__(self, path: str | Path, batch_size: int, evaluation: bool = False):
        super().__init__(path, batch_size, evaluation)  # the schema, the geometry, the cell offsets
        with RaggedReader(self.path, PARTICLE_FLOW_IMAGES) as reader:
            self.layer_names = WindowGeometry.from_config(reader.config).names
            #: (n_events + 1,) offsets of the fine cells: with the cells', the only per-event state kept in memory.
            self.fine_offsets = reader.offsets("fine_cells")
        self.factors = [(self.fine // n_eta, self.fine // n_phi) for n_eta, n_phi in self.shapes]

    def _fine_images(self, cells: dict[str, np.ndarray], cell_event: np.ndarray, n: int,
                     fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        """{field: (n, L, F, F)} of the fine cells scattered into dense images (0 where none is stored)."""
        where = (cell_event, cells["layer"].astype(np.int64), cells["ieta"].astype(np.int64),
                 cells["iphi"].astype(np.int64))
        images = {}
        for field in fields:
            image = np.zeros((n, len(self.shapes), self.fine, self.fine), np.float32)
            image[where] = np.asarray(cells[field], np.float32)
            images[field] = image
        return images

    def __getitem__(self, index: int) -> dict[str, object]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start, stop = index * self.batch_size, min((index + 1) * self.batch_size, self.n_events)
        n, h5 = stop - start, self._open()
        extra = tuple(key for key in EVALUATION_FIELDS if key not in EVENT_FIELDS) if self.evaluation else ()
        event_fields = EVENT_FIELDS + extra
        c0, c1 = int(self.offsets[start]), int(self.offsets[stop])
        f0, f1 = int(self.fine_offsets[start]), int(self.fine_offsets[stop])
        fields = _FINE_FIELDS + (("energy_charged", "energy_neutral") if self.evaluation else ())
        with self._reading(f"events {start}:{stop}"):
            events = {key: h5["events"][key][start:stop] for key in event_fields}
            cells = {key: h5["cells"][key][c0:c1] for key in CELL_FIELDS}
            fine_cells = {key: h5["fine_cells"][key][f0:f1] for key in fields}
        cell_event = np.repeat(np.arange(n), np.diff(self.offsets[start : stop + 1]))
        dense = dense_batch(events, cells, cell_event, self.shapes, self.fine, self.window)
        fine_event = np.repeat(np.arange(n), np.diff(self.fine_offsets[start : stop + 1]))
        images = self._fine_images(fine_cells, fine_event, n, fields[3:])
        batch = {"coarse": dense["layers"], "track": dense["track"], "fine": images["energy"],
                 "row": np.arange(start, stop, dtype=np.int64)}
        if self.evaluation:
            batch["fine_charged"] = images["energy_charged"]
            batch["fine_neutral"] = images["energy_neutral"]
            batch["events"] = {key: events[key] for key in EVALUATION_FIELDS}
        return batch


#: Fine cells read per chunk by ``fine_mean_squares`` (memory flat however large the files).
FINE_CELLS_PER_CHUNK = 1_000_000


def fine_mean_squares(paths, n_layers: int, fine: int) -> np.ndarray:
    """(n_layers,) float64 [GeV^2]: every layer's mean over the events of ``paths``
    (particle_flow_images files) and its F x F fine cells of the squared fine truth,
    sum E^2 / (n_events F^2), streamed from the stored fine cells (absent cells are 0);
    ValueError if the files hold no event."""
    total, n_events = np.zeros(n_layers), 0
    for path in paths:
        with RaggedReader(path, PARTICLE_FLOW_IMAGES) as reader:
            n_events += reader.n_rows("events")
            n_cells = reader.n_rows("fine_cells")
            for start in range(0, n_cells, FINE_CELLS_PER_CHUNK):
                cells = reader.read("fine_cells", ("layer", "energy"), start, start + FINE_CELLS_PER_CHUNK)
                energy = cells["energy"].astype(np.float64)
                total += np.bincount(cells["layer"].astype(np.int64), energy * energy, minlength=n_layers)[:n_layers]
    if n_events == 0:
        raise ValueError(f"fine_mean_squares: no events in {[str(p) for p in paths]}; expected training events")
    return total / (n_events * fine * fine)
