"""Jet images from the Top Quark Tagging Reference Dataset's constituents (Kasieczka et al.,
SciPost Phys. 7 (2019) 014), so that the study's taggers train and are scored on the
landscape paper's own jets, splits and labels.

Each constituent is a point deposit of its pT at its (eta, phi), around the axis of the sum
of the jet's constituents, through the same preprocessing and pixelisation as the
calorimeter's images (``preparation.particle_images``, as for our own generator-level
constituents): no cell spreading, the constituents are Delphes energy-flow objects. The
authors' splits stay the splits (train.h5, val.h5, test.h5); each file is read in chunks of ROWS_PER_CHUNK jets, so
memory stays flat in the file size, and the jets of every chunk are shuffled (seeded), so
that any slice of an output mixes both classes whatever the file's order.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Mapping

import numpy as np
from tqdm import tqdm

from pipeline.config import config_hash
from pipeline.datasets import SPLITS, dataset, describe, source_files
from pipeline.io.hdf5 import RaggedWriter, provenance_attrs
from pipeline.seeds import derive_seed
from pipeline.studies.jet_images.formats import jet_images_schema
from pipeline.studies.jet_images.preparation import particle_images

log = logging.getLogger(__name__)

#: Jets read, imaged and written at once (memory: ~100 MB for 200 constituents, 40 x 40 pixels).
ROWS_PER_CHUNK = 10_000


def constituent_images(p4: np.ndarray, settings: Mapping) -> dict[str, np.ndarray]:
    """Jet kinematics and images of jets given by their constituents.

    p4: (n, m, 4) constituent four-momenta (E, px, py, pz) in GeV, rows with E = 0 padding;
    settings: the jet_images section. Returns the jet_images fields pt, eta, phi, mass (of
    the constituents' sum) and image (n, pixels, pixels) float32 [GeV pT per pixel].
    """
    p4 = np.asarray(p4)
    n = len(p4)
    # Only the real constituents, in float64 (the padding is most of the array).
    owner, index = np.nonzero(p4[..., 0] > 0)
    energy, px, py, pz = np.asarray(p4[owner, index], np.float64).T
    jet = np.stack([np.bincount(owner, component, n) for component in (energy, px, py, pz)], axis=1)
    jet_pt = np.hypot(jet[:, 1], jet[:, 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        jet_eta = np.where(jet_pt > 0, np.arcsinh(jet[:, 3] / jet_pt), 0.0)
    jet_phi = np.arctan2(jet[:, 2], jet[:, 1])
    mass = np.sqrt(np.maximum(jet[:, 0] ** 2 - (jet[:, 1:] ** 2).sum(axis=1), 0.0))
    image = particle_images(owner, px, py, pz, jet_eta, jet_phi, settings)
    return {"pt": jet_pt.astype(np.float32), "eta": jet_eta.astype(np.float32), "phi": jet_phi.astype(np.float32),
            "mass": mass.astype(np.float32), "image": image}


def convert_top_tagging(config: Mapping, outputs: Mapping[str, str | Path], progress: bool = True) -> dict[str, int]:
    """Write the study's train/val/test jet_images files from the top-tagging sample's
    train.h5, val.h5 and test.h5 (every file's layout checked before any is written).
    Returns the jets per split."""
    settings = config["jet_images"]
    sample = settings["signal"]
    found = dataset(config["samples"][sample])
    if found is None or found.name != "top_tagging" or settings["background"] != sample:
        raise ValueError(f"jet_images.signal and .background: expected one top_tagging file sample, got "
                         f"{settings['signal']!r} and {settings['background']!r}")
    missing = set(SPLITS) - set(outputs)
    if missing:
        raise ValueError(f"convert_top_tagging: missing output paths for {sorted(missing)}")
    paths = source_files(config["samples"][sample])
    stage = {"seed": config["seed"], "samples": {sample: config["samples"][sample]}, "jet_images": settings}
    attrs = provenance_attrs(stage, config_hash(stage), config["seed"])
    attrs.update(pixels=settings["pixels"], pixel_size=settings["pixel_size"],
                 preprocessing=json.dumps(settings["preprocessing"]), dataset=describe(config, sample))
    schema = jet_images_schema(settings["pixels"])
    counts = {}
    with ExitStack() as stack:
        files = {split: stack.enter_context(found.open(paths[split])) for split in SPLITS}
        for split, reader in files.items():
            rng = np.random.Generator(np.random.PCG64(derive_seed(config["seed"], sample, split, "shuffle")))
            split_attrs = {**attrs, "split": split, "sources": json.dumps([str(reader.path)])}
            with RaggedWriter(outputs[split], schema, split_attrs) as writer:
                for start in tqdm(range(0, reader.n_jets, ROWS_PER_CHUNK), desc=f"jet images {sample}/{split}",
                                  disable=not progress, mininterval=5.0):
                    p4, label = reader.read(start, start + ROWS_PER_CHUNK)
                    jets = constituent_images(p4, settings)
                    jets.update(label=label, event=np.arange(start, start + len(label), dtype=np.int64),
                                shard=np.zeros(len(label), np.int32))
                    order = rng.permutation(len(label))
                    writer.append({"jets": {name: values[order] for name, values in jets.items()}})
            counts[split] = reader.n_jets
            log.info("%s: %d jets of %s", split, reader.n_jets, reader.path)
    return counts
