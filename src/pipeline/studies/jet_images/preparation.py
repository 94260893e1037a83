"""Jet images from calorimeter cells (or, with ``jet_images.objects: particles``, from the
jets' generator-level constituents, no detector): transverse energy in (delta eta, delta phi)
pixels around the jet axis, with the standard preprocessing, and the study's train/val/test
files.

A cell's transverse energy is E / cosh(eta) at its centre. Every cell is spread evenly
over sub-cells no wider than half a pixel, so it shares its energy among the pixels it
overlaps roughly in proportion to the overlap instead of lighting a single pixel: the
0.1-wide hadronic cells would otherwise light every second or third pixel, and the
0.025 EM cells on 0.04 pixels would draw a moire pattern. Preprocessing (each step switchable),
on the deposits' coordinates before pixelisation, so no image is interpolated:

1. centre: subtract the E_T-weighted centroid (delta eta, delta phi) of the jet's cells;
2. rotate: turn the principal axis of the E_T distribution (largest second moment) to
   the vertical, the delta phi axis;
3. flip: mirror each axis so that the half with more E_T is the positive one, which
   puts the brightest quadrant upper right.

Images are (pixels, pixels) arrays, axis 0 = delta eta (x), axis 1 = delta phi (y), GeV.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import ExitStack
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.config import config_hash
from pipeline.io.hdf5 import RaggedReader, RaggedWriter, parent_index, provenance_attrs, ragged_rows
from pipeline.io.outputs import save_figure
from pipeline.seeds import derive_seed
from pipeline.simulation.calorimeter_geometry import CalorimeterGeometry
from pipeline.simulation.formats import CALORIMETER_CELLS, PARTICLE_JETS
from pipeline.simulation.kinematics import wrap_phi
from pipeline.simulation.split import SPLITS, assign_events
from pipeline.simulation.stage import ShardStage
from pipeline.studies.jet_images.formats import IMAGE_CLASSES, jet_images_schema

log = logging.getLogger(__name__)

#: Events read at once when building images (memory: their cells and jets).
EVENTS_PER_CHUNK = 500
#: Rows of every input file taken per round when writing the split files.
ROWS_PER_ROUND = 2000
#: What the data set's name adds for the images' objects (jet_images.objects).
OBJECTS_NOTE = {"calorimeter": "", "particles": " (generator-level constituents, no detector)"}


def image_coordinates(x: np.ndarray, y: np.ndarray, et: np.ndarray, jet: np.ndarray, n_jets: int,
                      steps: Mapping[str, bool]) -> tuple[np.ndarray, np.ndarray]:
    """Preprocess deposit coordinates jet by jet (see the module docstring).

    x, y: (n,) delta eta and delta phi of each deposit from its jet's axis; et: (n,) its
    E_T [GeV] (negative noise counts in the image, not in the moments); jet: (n,) index
    in [0, n_jets) of its jet. steps: {centre, rotate, flip} booleans. Returns (x, y).
    """
    w = np.maximum(et, 0.0)
    total = np.maximum(np.bincount(jet, w, n_jets), 1e-12)

    def mean(values):
        return np.bincount(jet, w * values, n_jets) / total

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if steps["centre"]:
        x, y = x - mean(x)[jet], y - mean(y)[jet]
    if steps["rotate"]:
        mx, my = mean(x), mean(y)
        sxx, syy, sxy = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
        # The principal axis is at angle theta from the x axis; turn it by pi/2 - theta.
        theta = 0.5 * np.arctan2(2 * sxy, sxx - syy)
        cos, sin = np.cos(np.pi / 2 - theta)[jet], np.sin(np.pi / 2 - theta)[jet]
        x, y = x * cos - y * sin, x * sin + y * cos
    if steps["flip"]:
        for axis in (x, y):
            brighter_negative = np.bincount(jet, et * (axis < 0), n_jets) > np.bincount(jet, et * (axis > 0), n_jets)
            axis *= np.where(brighter_negative[jet], -1.0, 1.0)
    return x, y


def pixelate(x: np.ndarray, y: np.ndarray, et: np.ndarray, jet: np.ndarray, n_jets: int, pixels: int,
             pixel_size: float) -> np.ndarray:
    """(n_jets, pixels, pixels) images: the sum of ``et`` of the deposits in each pixel of
    width ``pixel_size`` centred on (0, 0); deposits outside the image are dropped."""
    ix = np.floor(x / pixel_size + pixels / 2).astype(np.int64)
    iy = np.floor(y / pixel_size + pixels / 2).astype(np.int64)
    inside = (ix >= 0) & (ix < pixels) & (iy >= 0) & (iy < pixels)
    flat = (jet[inside] * pixels + ix[inside]) * pixels + iy[inside]
    return np.bincount(flat, et[inside], n_jets * pixels * pixels).reshape(n_jets, pixels, pixels)


def jet_images(geometry: CalorimeterGeometry, cells: Mapping[str, np.ndarray], cell_offsets: np.ndarray,
               jets: Mapping[str, np.ndarray], jet_event: np.ndarray, settings: Mapping) -> np.ndarray:
    """Images of jets from the cells of their events.

    cells: calorimeter_cells fields (layer, ieta, iphi, energy) of a chunk of events;
    cell_offsets: (n_events + 1,) the cells of each event; jets: eta, phi (n_jets,) of the
    jet axes; jet_event: (n_jets,) index of each jet's event in the chunk; settings: the
    jet_images config section. Returns (n_jets, pixels, pixels) float32 images [GeV E_T].
    """
    pixels, size = settings["pixels"], settings["pixel_size"]
    n_jets = len(jet_event)
    # A cell can reach the image after the centring and rotation if it lies within the
    # image's half-diagonal plus a margin for the centroid shift.
    reach = size * pixels / 2 * math.sqrt(2) + 0.2
    pair_jet = np.repeat(np.arange(n_jets), cell_offsets[jet_event + 1] - cell_offsets[jet_event])
    pair_cell = ragged_rows(cell_offsets, jet_event)
    layer = cells["layer"][pair_cell].astype(np.int64)
    xs, ys, ets, owners = [], [], [], []
    for index, item in enumerate(geometry.layers):
        mine = layer == index
        cell, owner = pair_cell[mine], pair_jet[mine]
        eta, phi = geometry.cell_centres(index, cells["ieta"][cell], cells["iphi"][cell])
        dx = eta - jets["eta"][owner]
        dy = np.mod(phi - jets["phi"][owner] + np.pi, 2 * np.pi) - np.pi
        near = (np.abs(dx) < reach) & (np.abs(dy) < reach)
        cell, owner, dx, dy, eta = cell[near], owner[near], dx[near], dy[near], eta[near]
        et = cells["energy"][cell].astype(np.float64) / np.cosh(eta)
        # Split the cell into f_eta x f_phi sub-cells no wider than half a pixel.
        f_eta, f_phi = (max(1, math.ceil(2 * width / size - 1e-9)) for width in (item.deta, item.dphi))
        sub_x = ((np.arange(f_eta) + 0.5) / f_eta - 0.5) * item.deta
        sub_y = ((np.arange(f_phi) + 0.5) / f_phi - 0.5) * item.dphi
        grid_x, grid_y = (g.ravel() for g in np.meshgrid(sub_x, sub_y, indexing="ij"))
        xs.append((dx[:, None] + grid_x).ravel())
        ys.append((dy[:, None] + grid_y).ravel())
        ets.append(np.repeat(et / (f_eta * f_phi), len(grid_x)))
        owners.append(np.repeat(owner, len(grid_x)))
    x, y, et, owner = (np.concatenate(parts) for parts in (xs, ys, ets, owners))
    x, y = image_coordinates(x, y, et, owner, n_jets, settings["preprocessing"])
    return pixelate(x, y, et, owner, n_jets, pixels, size).astype(np.float32)


def particle_images(owner: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray, axis_eta: np.ndarray,
                    axis_phi: np.ndarray, settings: Mapping) -> np.ndarray:
    """Images of jets from their particles: each particle a point deposit of its pT at its
    (eta, phi) relative to its jet's axis, through the same preprocessing and pixels as the
    cells (no spreading: a particle has no cell width).

    owner: (k,) index of each particle's jet; px, py, pz: (k,) GeV; axis_eta, axis_phi:
    (n_jets,) the jets' axes; settings: the jet_images section. Particles along the beam
    (pT = 0) deposit nothing. Returns (n_jets, pixels, pixels) float32 [GeV pT per pixel].
    """
    n_jets = len(axis_eta)
    pt = np.hypot(px, py)
    along = pt > 0
    owner, pt, px, py, pz = owner[along], pt[along], px[along], py[along], pz[along]
    eta = np.arcsinh(pz / pt)
    phi = np.arctan2(py, px)
    x, y = image_coordinates(eta - axis_eta[owner], wrap_phi(phi - axis_phi[owner]), pt, owner, n_jets,
                             settings["preprocessing"])
    return pixelate(x, y, pt, owner, n_jets, settings["pixels"], settings["pixel_size"]).astype(np.float32)


def sample_label(config: Mapping, sample: str) -> int:
    """1 for the study's signal sample, 0 for its background; ValueError otherwise."""
    study = config["jet_images"]
    roles = {study["signal"]: 1, study["background"]: 0}
    if sample not in roles:
        raise ValueError(f"sample {sample!r} is neither jet_images.signal ({study['signal']!r}) "
                         f"nor jet_images.background ({study['background']!r})")
    return roles[sample]


def build_jet_images(config: Mapping, generated: str | Path, cells_path: str | Path | None, output: str | Path,
                     progress: bool = True) -> int:
    """Write the jet images of one shard (jet_images schema): from the calorimeter cells of
    ``cells_path``, or with ``jet_images.objects: particles`` from the jets' constituents in
    ``generated`` (``cells_path`` is then not read and may be None). Signal jets must contain
    a hadronic top (``top_contained``), background jets are all jets of the sample's
    selection. Returns the number of jets written."""
    settings = config["jet_images"]
    from_cells = settings["objects"] == "calorimeter"
    if from_cells and cells_path is None:
        raise ValueError("build_jet_images: jet_images.objects is calorimeter, so the calorimeter_cells file "
                         "of the shard is needed (--cells)")
    geometry = CalorimeterGeometry.from_settings(config["calorimeter"]) if from_cells else None
    stage = ShardStage("jet_images", ("calorimeter", "jet_images") if from_cells else ("jet_images",),
                       jet_images_schema(settings["pixels"]), EVENTS_PER_CHUNK, seeded=False)

    def image_attrs(readers, sample):
        return {"label": sample_label(config, sample), "n_events": readers["generated"].n_rows("events"),
                "pixels": settings["pixels"], "pixel_size": settings["pixel_size"],
                "preprocessing": json.dumps(settings["preprocessing"]), "objects": settings["objects"]}

    def process(readers, start, stop, rng):
        jets_file = readers["generated"]
        label = sample_label(config, str(jets_file.attrs["sample"]))
        jets, jet_offsets = jets_file.read_children("jets", start, stop)
        event = jets_file.read("events", ["event"], start, stop)["event"]
        jet_event = parent_index(jet_offsets)
        keep = np.flatnonzero(jets["top_contained"] == 1) if label == 1 else np.arange(len(jet_event))
        jets = {k: v[keep] for k, v in jets.items()}
        if from_cells:
            cells, cell_offsets = readers["cells"].read_children("cells", start, stop)
            images = jet_images(geometry, cells, cell_offsets, jets, jet_event[keep], settings)
        else:
            first_jet = int(jets_file.offsets("jets", start, stop)[0])
            particles, offsets = jets_file.read_children("constituents", first_jet, first_jet + len(jet_event),
                                                         ["px", "py", "pz"])
            rows = ragged_rows(offsets, keep)
            owner = np.repeat(np.arange(len(keep)), offsets[keep + 1] - offsets[keep])
            images = particle_images(owner, *(particles[k][rows].astype(np.float64) for k in ("px", "py", "pz")),
                                     jets["eta"].astype(np.float64), jets["phi"].astype(np.float64), settings)
        shard = int(jets_file.attrs["shard"])
        return {"jets": {
            "pt": jets["pt"], "eta": jets["eta"], "phi": jets["phi"], "mass": jets["mass"],
            "label": np.full(len(keep), label, np.int8), "event": event[jet_event[keep]],
            "shard": np.full(len(keep), shard, np.int32), "image": images,
        }}, {}

    inputs = {"generated": (generated, PARTICLE_JETS)}
    if from_cells:
        inputs["cells"] = (cells_path, CALORIMETER_CELLS)
    rows = stage.run(config, inputs, output, process, progress, image_attrs)
    log.info("jet images (%s): %d jets of %s", settings["objects"], rows["jets"], Path(generated).name)
    return rows["jets"]


def split_jet_images(config: Mapping, inputs: Sequence[str | Path], outputs: Mapping[str, str | Path]) -> dict[str, int]:
    """Merge the per-shard image files of signal and background into train/val/test.

    Whole events go to one split with the same seeded assignment as the track splits
    (``pipeline.simulation.split.assign_events``). The files are read in rounds of ROWS_PER_ROUND
    rows each and every round is shuffled, so any slice of an output mixes both classes
    and all shards while memory stays bounded. Returns the jets per split.
    """
    missing = set(SPLITS) - set(outputs)
    if missing:
        raise ValueError(f"split_jet_images: missing output paths for {sorted(missing)}")
    settings = config["jet_images"]
    readers: list[RaggedReader] = []
    with ExitStack() as stack:
        for path in inputs:
            readers.append(stack.enter_context(RaggedReader(path, jet_images_schema(settings["pixels"]))))
        assignments, samples = [], []
        for reader in readers:
            sample, shard = str(reader.attrs["sample"]), int(reader.attrs["shard"])
            if int(reader.attrs["pixels"]) != settings["pixels"]:
                raise ValueError(f"{reader.path}: {reader.attrs['pixels']} pixels, the config asks for "
                                 f"{settings['pixels']}")
            objects = str(reader.attrs.get("objects", "calorimeter"))
            if objects != settings["objects"]:
                raise ValueError(f"{reader.path}: images of {objects}, the config asks for jet_images.objects "
                                 f"{settings['objects']!r}")
            sample_label(config, sample)
            samples.append(sample)
            assignments.append(assign_events(int(reader.attrs["n_events"]), config["split"],
                                             derive_seed(config["seed"], sample, shard, "split")))
        stage = {"seed": config["seed"], "split": config["split"], "jet_images": settings,
                 "samples": {name: config["samples"][name] for name in sorted(set(samples))}}
        attrs = provenance_attrs(stage, config_hash(stage), config["seed"])
        attrs.update(pixels=settings["pixels"], pixel_size=settings["pixel_size"],
                     preprocessing=json.dumps(settings["preprocessing"]),
                     sources=json.dumps([str(p) for p in inputs]),
                     objects=settings["objects"],
                     dataset=f"simulation{OBJECTS_NOTE[settings['objects']]}, samples {settings['signal']} (top) "
                             f"and {settings['background']} (QCD)")
        schema = jet_images_schema(settings["pixels"])
        writers = {name: stack.enter_context(RaggedWriter(outputs[name], schema, {**attrs, "split": name}))
                   for name in SPLITS}
        rng = np.random.Generator(np.random.PCG64(derive_seed(config["seed"], "jet_images", "shuffle")))
        counts = dict.fromkeys(SPLITS, 0)
        longest = max((reader.n_rows("jets") for reader in readers), default=0)
        for start in range(0, longest, ROWS_PER_ROUND):
            parts = [reader.read("jets", None, start, start + ROWS_PER_ROUND) for reader in readers]
            split = np.concatenate([assignment[part["event"]] for assignment, part in zip(assignments, parts)])
            rows = {k: np.concatenate([part[k] for part in parts]) for k in schema.collection("jets").field_names()}
            order = rng.permutation(len(split))
            for index, name in enumerate(SPLITS):
                take = order[split[order] == index]
                writers[name].append({"jets": {k: v[take] for k, v in rows.items()}})
                counts[name] += len(take)
    return counts


def plot_jet_images(path: str | Path, output_dir: str | Path, examples: int = 3) -> None:
    """The average image of each class (the lecture's picture) and ``examples`` single
    jets per class, from a jet_images file read in chunks; PNG and PDF."""
    # here: the build and split jobs import this module too; matplotlib costs them ~1 s
    from matplotlib.colors import LogNorm

    from pipeline.io.outputs import pyplot

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with RaggedReader(path, jet_images_schema()) as reader:
        pixels, size = int(reader.attrs["pixels"]), float(reader.attrs["pixel_size"])
        sums = np.zeros((2, pixels, pixels))
        counts = np.zeros(2, np.int64)
        singles: dict[int, list[np.ndarray]] = {0: [], 1: []}
        for start in range(0, reader.n_rows("jets"), ROWS_PER_ROUND):
            rows = reader.read("jets", ["label", "image"], start, start + ROWS_PER_ROUND)
            for label in (0, 1):
                mine = rows["image"][rows["label"] == label]
                sums[label] += mine.sum(axis=0)
                counts[label] += len(mine)
                singles[label].extend(mine[: examples - len(singles[label])])
    if not counts.all():
        raise ValueError(f"{path}: needs jets of both classes to plot, found {dict(zip(IMAGE_CLASSES, counts))}")
    plt = pyplot()
    extent = [-pixels * size / 2, pixels * size / 2] * 2

    def show(ax, image, title):
        positive = image[image > 0]
        norm = LogNorm(vmin=max(positive.min(), positive.max() * 1e-5), vmax=positive.max()) if positive.size else None
        # imshow draws axis 0 downwards: transpose so delta eta runs along x, delta phi up y.
        shown = ax.imshow(np.where(image.T > 0, image.T, np.nan), origin="lower", extent=extent, norm=norm,
                          cmap="viridis")
        ax.set_xlabel(r"$\Delta\eta$ (rotated)")
        ax.set_ylabel(r"$\Delta\phi$ (rotated)")
        ax.set_title(title, fontsize=16)
        return shown

    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    for label, ax in zip((1, 0), axes):
        shown = show(ax, sums[label] / counts[label], f"average {IMAGE_CLASSES[label]} jet ({counts[label]} jets)")
        fig.colorbar(shown, ax=ax, label=r"mean $E_\mathrm{T}$ per pixel [GeV]")
    fig.tight_layout()
    save_figure(fig, output_dir / "average_images")
    plt.close(fig)

    fig, axes = plt.subplots(2, examples, figsize=(5 * examples, 9.5), squeeze=False)
    for row, label in enumerate((1, 0)):
        for col, image in enumerate(singles[label]):
            shown = show(axes[row, col], image, f"{IMAGE_CLASSES[label]} jet {col + 1}")
            fig.colorbar(shown, ax=axes[row, col], label=r"$E_\mathrm{T}$ [GeV]")
    fig.tight_layout()
    save_figure(fig, output_dir / "single_jets")
    plt.close(fig)
