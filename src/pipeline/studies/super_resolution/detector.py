"""The super-resolution study's detector: the particle-flow study's calorimeter window
(layers, depths, sampling, noise, fine granularity, topo-cluster readout) with this
study's detector cells per layer (``super_resolution.granularity``), a coarser cell the
sum of the particle-flow detector's: by default its noise that of the sum of their
independent channels (``super_resolution.noise: ganged``; em2's 32 x 32 cells, four of the
particle-flow detector's 64 x 64 at 34 MeV each, have 68 MeV).

The images are the particle-flow study's (``particle_flow.images``, format
``particle_flow_images``), built from the same gun events with this detector: a file
describes its own geometry through the config it stores, so every reader of that format
reads these files unchanged.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Mapping

#: The name of the per-shard stage writing this study's images (its own random stream, the
#: noise) and the config sections it stores.
IMAGE_STAGE_NAME = "super_resolution_images"
IMAGE_SECTIONS = ("tracker", "calorimeter", "particle_flow", "super_resolution")


def detector_config(config: Mapping) -> dict:
    """A copy of the resolved config whose ``particle_flow.calorimeter`` layers have the
    cells of ``super_resolution.granularity`` and their noise (``super_resolution.noise``); ValueError naming the entry that does not
    divide the fine granularity or does not match the layers."""
    section = config["super_resolution"]
    calorimeter = config["particle_flow"]["calorimeter"]
    cells, layers, fine = section["granularity"], calorimeter["layers"], int(calorimeter["fine"])
    if len(cells) != len(layers):
        raise ValueError(f"super_resolution.granularity: {len(cells)} entries for the {len(layers)} layers of "
                         f"particle_flow.calorimeter; expected one (n_eta, n_phi) per layer")
    for index, (layer, (n_eta, n_phi)) in enumerate(zip(layers, cells)):
        for axis, n in (("n_eta", n_eta), ("n_phi", n_phi)):
            if fine % n:
                raise ValueError(f"super_resolution.granularity[{index}] ({layer['name']!r}): {axis} = {n} does "
                                 f"not divide particle_flow.calorimeter.fine = {fine}; expected a divisor of it")
    derived = copy.deepcopy(dict(config))
    derived["particle_flow"]["calorimeter"]["layers"] = [
        {**layer, "n_eta": int(n_eta), "n_phi": int(n_phi), "noise": _noise(layer, n_eta, n_phi, section["noise"])}
        for layer, (n_eta, n_phi) in zip(layers, cells)]
    return derived


def _noise(layer: Mapping, n_eta: int, n_phi: int, mode: str) -> float:
    """The noise sigma [GeV] of a cell of an (n_eta, n_phi) layer (``super_resolution.noise``):
    ``ganged``, the particle-flow layer's sigma times sqrt(its cells per cell of this layer)
    (a sum of independent channels); ``per_cell``, the particle-flow layer's sigma."""
    if mode == "per_cell":
        return float(layer["noise"])
    return float(layer["noise"]) * math.sqrt(layer["n_eta"] * layer["n_phi"] / (n_eta * n_phi))


def build_shard(config: Mapping, generated: str | Path, output: str | Path, progress: bool = True) -> dict:
    """Write the particle_flow_images file of one gun shard with this study's detector. Returns rows per collection."""
    # Imported here: the config checks read detector_config, and every job validates its config.
    from pipeline.simulation.stage import ShardStage
    from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES
    from pipeline.studies.particle_flow.images import EVENTS_PER_CHUNK, build_image_shard

    stage = ShardStage(IMAGE_STAGE_NAME, IMAGE_SECTIONS, PARTICLE_FLOW_IMAGES, EVENTS_PER_CHUNK)
    return build_image_shard(detector_config(config), generated, output, progress, stage=stage)

