"""Gun events to the particle-flow study's calorimeter images, one shard at a time.

Per event (``build_images``, vectorised over the events of a chunk):

1. the charged pion's track: the tracker model's smeared perigee parameters
   (``tracks.smeared_tracks``), extrapolated to the front face and to every layer's
   mid-depth (``tracks.extrapolate``); the window is centred on its front-face impact
   (on the first gun particle's true impact when there is no track);
2. every final-state particle's shower from the project's calorimeter model
   (``pipeline.simulation.shower.shower_deposits``), centred in each layer where
   the particle crosses that layer's mid-depth, binned into the fine cells of every
   layer: the measured (sampling-smeared) energy and the true deposits of the charged and
   of the neutral gun particles' descendants (by the gun particle each one comes from, so
   a pi0's Dalitz electrons count as neutral);
3. the detector cells: blocks of fine cells summed (exactly, before noise), the layer's
   electronic noise added to every cell, and ATLAS topo-clusters (``topoclusters``) as
   the readout's zero suppression: only clustered cells are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.io.hdf5 import parent_index, read_tree
from pipeline.simulation.formats import GUN_EVENTS
from pipeline.simulation.helix import propagate_to_calorimeter
from pipeline.simulation.shower import shower_deposits
from pipeline.simulation.stage import ShardStage
from pipeline.simulation.tracker import select_trackable
from pipeline.simulation.window_geometry import WindowGeometry
from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES
from pipeline.studies.particle_flow.topoclusters import topo_clusters
from pipeline.studies.particle_flow.tracks import extrapolate, smeared_tracks

#: Events simulated together: bounds the dense fine grids (6 x 64 x 64 per event) and is
#: fixed so that the random stream, hence the output, does not depend on the shard size.
EVENTS_PER_CHUNK = 64


def wrapped(phi):
    """Angles [rad] brought into [-pi, pi)."""
    return np.mod(np.asarray(phi) + np.pi, 2 * np.pi) - np.pi


def _first_per_event(event: np.ndarray, mask: np.ndarray, n_events: int) -> np.ndarray:
    """(n_events,) index of the first row of each event where mask holds, -1 for none."""
    rows = np.flatnonzero(mask)
    first = np.full(n_events, -1)
    # Reversed assignment: the first row of an event is written last and wins.
    first[event[rows][::-1]] = rows[::-1]
    return first


def event_tracks(primaries: Mapping[str, np.ndarray], event: np.ndarray, n_events: int, tracker: Mapping,
                 geometry: WindowGeometry, rng) -> dict[str, np.ndarray]:
    """The track of each event's first charged gun particle, (n_events,) each; NaN where none.

    Returns has_track, the smeared track's parameters (``tracks.smeared_tracks`` names)
    and its extrapolation: ``front_eta``, ``front_phi`` (n_events,) at the front face and
    ``layer_eta``, ``layer_phi`` (n_events, n_layers) at the layers' mid-depths (absolute).
    """
    charged = primaries["charge"] != 0
    first = _first_per_event(event, charged, n_events)
    rows = first[first >= 0]
    candidates = {key: np.asarray(primaries[key], np.float64)[rows]
                  for key in ("px", "py", "pz", "charge", "vx", "vy", "vz")}
    # Drawn for every charged gun particle so the stream does not depend on the cuts.
    tracked = select_trackable(candidates, tracker, rng)
    smeared = smeared_tracks(candidates, tracker, rng)
    events = np.flatnonzero(first >= 0)[tracked]
    out: dict[str, np.ndarray] = {"has_track": np.zeros(n_events, np.int8)}
    out["has_track"][events] = 1
    for key, value in smeared.items():
        column = np.full(n_events, np.nan)
        column[events] = value[tracked]
        out[key] = column
    sel = {key: smeared[key][tracked] for key in ("px", "py", "pz", "x", "y", "z")}
    radii = np.concatenate([[geometry.radius], geometry.radii])
    eta, phi, _ = extrapolate(sel["px"], sel["py"], sel["pz"], np.sign(smeared["qoverp"][tracked]),
                              sel["x"], sel["y"], sel["z"], tracker["bfield"], geometry.radius, radii)
    for name, value in (("eta", eta), ("phi", phi)):
        front = np.full(n_events, np.nan)
        layers = np.full((n_events, geometry.n_layers), np.nan)
        front[events], layers[events] = value[:, 0], value[:, 1:]
        out[f"front_{name}"], out[f"layer_{name}"] = front, layers
    return out


def fine_images(geometry: WindowGeometry, particles: Mapping[str, np.ndarray], event: np.ndarray,
                neutral: np.ndarray, centre_eta: np.ndarray, centre_phi: np.ndarray, rng) -> np.ndarray:
    """(3, n_events, n_layers, fine, fine) fine images: measured (sampling-smeared, no
    noise), true charged and true neutral deposits [GeV].

    particles: the gun_events particle fields, (n,) each; event (n,) their event in the
    chunk; neutral (n,) whether each descends from a neutral gun particle; centre_eta,
    centre_phi (n_events,) the windows' centres. Deposits outside the window are lost.
    """
    n_events, n_layers, fine = len(centre_eta), geometry.n_layers, geometry.fine
    p = {key: np.asarray(particles[key], np.float64) for key in
         ("px", "py", "pz", "energy", "charge", "vx", "vy", "vz")}
    p["pdgid"] = np.asarray(particles["pdgid"])
    sub = shower_deposits(geometry.shower, p, rng, geometry.energy_per_subdeposit, geometry.max_subdeposits)
    eta, phi, _ = extrapolate(p["px"], p["py"], p["pz"], p["charge"], p["vx"], p["vy"], p["vz"], geometry.bfield,
                              geometry.radius, geometry.radii)
    particle, layer = sub["particle"], sub["layer"]
    ev = event[particle]
    d_eta = eta[particle, layer] + sub["d_eta"] - centre_eta[ev]
    d_phi = wrapped(phi[particle, layer] + sub["d_phi"] - centre_phi[ev])
    ieta, iphi, inside = geometry.fine_index(d_eta, d_phi)
    flat = (((ev * n_layers + layer) * fine + ieta) * fine + iphi)[inside]
    true = sub["energy_true"][inside]
    is_neutral = neutral[particle][inside]
    size = n_events * n_layers * fine * fine
    images = [np.bincount(flat, weights, minlength=size).astype(np.float64) for weights in
              (sub["energy"][inside], np.where(is_neutral, 0.0, true), np.where(is_neutral, true, 0.0))]
    return np.stack(images).reshape(3, n_events, n_layers, fine, fine)


def detector_images(geometry: WindowGeometry, fine: np.ndarray) -> list[np.ndarray]:
    """Detector cells from fine images (..., n_layers, fine, fine): per layer the sum of
    each detector cell's block of fine cells, (..., n_eta, n_phi)."""
    out = []
    for index, (n_eta, n_phi) in enumerate(geometry.shapes):
        fe, fp = geometry.factors(index)
        layer = fine[..., index, :, :]
        out.append(layer.reshape(*layer.shape[:-2], n_eta, fe, n_phi, fp).sum(axis=(-3, -1)))
    return out


def build_images(geometry: WindowGeometry, config: Mapping, arrays: Mapping, offsets: Mapping, first_event: int,
                 shard: int, rng) -> tuple[dict, dict]:
    """The particle_flow_images (arrays, counts) of a chunk of gun events (``read_tree`` output)."""
    primaries, particles = arrays["primaries"], arrays["particles"]
    n_events = len(arrays["events"]["event"])
    prim_event = parent_index(offsets["primaries"])
    part_event = parent_index(offsets["particles"])
    track = event_tracks(primaries, prim_event, n_events, config["tracker"], geometry, rng)

    # True impacts of the first charged and the first neutral gun particle on the front face.
    charge = np.asarray(primaries["charge"])
    impact_eta, impact_phi, _ = propagate_to_calorimeter(
        primaries["px"], primaries["py"], primaries["pz"], charge, primaries["vx"], primaries["vy"],
        primaries["vz"], geometry.bfield, geometry.radius)
    truth = {}
    for name, mask in (("charged", charge != 0), ("neutral", charge == 0)):
        first = _first_per_event(prim_event, mask, n_events)
        has = first >= 0
        truth[f"{name}_energy"] = np.bincount(prim_event[mask], np.asarray(primaries["energy"])[mask],
                                              minlength=n_events)
        truth[f"{name}_eta"] = np.where(has, impact_eta[np.maximum(first, 0)], np.nan)
        truth[f"{name}_phi"] = np.where(has, impact_phi[np.maximum(first, 0)], np.nan)
    first_primary = np.asarray(offsets["primaries"])[:-1]
    fallback_eta, fallback_phi = impact_eta[first_primary], impact_phi[first_primary]
    centre_eta = np.where(track["has_track"] == 1, track["front_eta"], fallback_eta)
    centre_phi = np.where(track["has_track"] == 1, track["front_phi"], fallback_phi)

    # Descendants of a neutral gun particle: by the gun particle each particle comes from.
    primary_row = np.asarray(offsets["primaries"])[part_event] + np.asarray(particles["primary"], np.int64)
    neutral = charge[primary_row] == 0
    fine = fine_images(geometry, particles, part_event, neutral, centre_eta, centre_phi, rng)
    detector = [detector_images(geometry, part) for part in fine]  # [measured, charged, neutral] x layers
    measured = [image + layer.noise * rng.standard_normal(image.shape)
                for image, layer in zip(detector[0], geometry.layers)]
    topo = config["particle_flow"]["topo_clusters"]
    labels = topo_clusters(measured, [layer.noise for layer in geometry.layers], seed=topo["seed"],
                           neighbour=topo["neighbour"], perimeter=topo["perimeter"])

    cells = _sparse([(labels[l] >= 0) for l in range(geometry.n_layers)],
                    {"energy": measured, "energy_charged": detector[1], "energy_neutral": detector[2],
                     "cluster": labels}, n_events)
    # A fine cell with a true deposit is kept even where the sampling left no measured energy.
    fine_cells = _sparse([(fine[:, :, l] != 0).any(axis=0) for l in range(geometry.n_layers)],
                         {"energy": [fine[0][:, l] for l in range(geometry.n_layers)],
                          "energy_charged": [fine[1][:, l] for l in range(geometry.n_layers)],
                          "energy_neutral": [fine[2][:, l] for l in range(geometry.n_layers)]}, n_events)
    events = {
        "event": first_event + np.arange(n_events), "shard": np.full(n_events, shard),
        "window_eta": centre_eta, "window_phi": centre_phi,
        "charged_energy": truth["charged_energy"], "neutral_energy": truth["neutral_energy"],
        "charged_eta": truth["charged_eta"] - centre_eta, "charged_phi": wrapped(truth["charged_phi"] - centre_phi),
        "neutral_eta": truth["neutral_eta"] - centre_eta, "neutral_phi": wrapped(truth["neutral_phi"] - centre_phi),
        "has_track": track["has_track"], "track_p": track["p"], "track_pt": track["pt"],
        "track_eta": -np.log(np.tan(track["theta"] / 2)), "track_phi": track["phi"], "track_d0": track["d0"],
        "track_z0": track["z0"], "track_qoverp": track["qoverp"], "track_sigma_qoverp": track["sigma_qoverp"],
        "track_layer_eta": track["layer_eta"] - centre_eta[:, None],
        "track_layer_phi": wrapped(track["layer_phi"] - centre_phi[:, None]),
    }
    return ({"events": events, "cells": cells[0], "fine_cells": fine_cells[0]},
            {"cells": cells[1], "fine_cells": fine_cells[1]})


def _sparse(masks: list[np.ndarray], values: Mapping[str, list[np.ndarray]], n_events: int) -> tuple[dict, np.ndarray]:
    """The cells where ``masks`` (per layer, (n_events, n_eta, n_phi)) hold, as flat rows
    ordered by event, layer, ieta, iphi, with ``values`` (per field, per layer) at them;
    and the cells per event."""
    parts = []
    for index, mask in enumerate(masks):
        ev, ie, ip = np.nonzero(mask)
        part = {"event": ev, "layer": np.full(len(ev), index, np.uint8), "ieta": ie.astype(np.uint16),
                "iphi": ip.astype(np.uint16)}
        part.update({name: layers[index][ev, ie, ip] for name, layers in values.items()})
        parts.append(part)
    rows = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    order = np.argsort(rows.pop("event") * len(masks) + rows["layer"], kind="stable")
    counts = np.bincount(np.concatenate([part["event"] for part in parts]), minlength=n_events)
    return {key: value[order] for key, value in rows.items()}, counts


#: The per-shard stage writing particle_flow_images.
IMAGE_STAGE = ShardStage("particle_flow_images", ("tracker", "calorimeter", "particle_flow"), PARTICLE_FLOW_IMAGES,
                         EVENTS_PER_CHUNK)


def build_image_shard(config: Mapping, generated: str | Path, output: str | Path, progress: bool = True,
                      stage: ShardStage = IMAGE_STAGE) -> dict:
    """Write the particle_flow_images file of one gun shard (a gun_events file). Returns rows per collection.

    ``stage``: another study's stage (its random stream and the config sections it stores)
    building the same images with its own ``particle_flow.calorimeter`` (super_resolution)."""
    geometry = WindowGeometry.from_config(config)

    def process(readers, start, stop, rng):
        reader = readers["generated"]
        arrays, offsets = read_tree(reader, start, stop)
        return build_images(geometry, config, arrays, offsets, start, int(reader.attrs["shard"]), rng)

    def attrs(readers, sample):
        if config["samples"].get(sample, {}).get("process") != "particle_gun":
            raise ValueError(f"{generated}: sample {sample!r} is not a particle_gun sample of this config")
        return {"n_events": readers["generated"].n_rows("events"), "window": json.dumps(list(geometry.window)),
                "fine": geometry.fine, "layers": json.dumps([layer.__dict__ for layer in geometry.layers])}

    return stage.run(config, {"generated": (generated, GUN_EVENTS)}, output, process, progress, attrs)
