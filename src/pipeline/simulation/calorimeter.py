"""The fast calorimeter model: particles to zero-suppressed (eta, phi) cells in six layers.

A layered sampling calorimeter, ATLAS-like by default: three electromagnetic (EM) layers
(LAr/lead) followed by three hadronic (HAD) layers (steel/scintillator tiles), all read
out in projective (eta, phi) cells. The model is fully vectorised with NumPy: there is no
Python loop over particles or cells, only over the (six) layers.

Geometry and conventions
------------------------
* A uniform solenoid field B [T] along +z up to the front face of the EM calorimeter, a
  cylinder of radius ``radius`` [mm] used for all eta (barrel approximation: the endcaps
  are not modelled separately). There is no field inside the calorimeter. Positive
  particles turn clockwise seen from +z (phi decreases): ``pipeline.simulation.helix``.
* Layer depths are along the particle's (projective) flight path and the same for all
  eta: ``depth`` is in radiation lengths X0 for EM layers and in nuclear interaction
  lengths lambda for HAD layers. For a hadron crossing the EM layers their depth in lambda
  is depth / ``x0_per_lambda``: 24 X0 of the default EM calorimeter are 1.2 lambda, close
  to ATLAS's LAr barrel. The same ratio converts the EM part of hadron showers (a
  profile in X0) into lambda everywhere (an approximation in the steel, where X0/lambda
  is about 10).
* Cells: layer ``l`` has ``n_eta = 2 max_abs_eta / deta`` cells in eta, starting at
  -max_abs_eta, and ``nphi`` cells in phi starting at -pi. Granularities nest (every
  deta divides every larger deta, every nphi divides every larger nphi), so a coarse
  cell is exactly a block of finer cells (``rebin``).
* Energies are in GeV at the EM scale (an electron or photon deposits its energy);
  ``energy_charged`` and ``energy_neutral`` are the true visible deposits of charged and
  neutral particles before sampling fluctuations and noise.

Physics: ``pipeline.simulation.shower`` (each particle's deposits per layer, smeared
and spread laterally); here the deposits are summed into cells, every cell gets Gaussian
noise, and cells are zero-suppressed symmetrically.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from pipeline.simulation.calorimeter_geometry import CalorimeterGeometry
from pipeline.simulation.shower import shower_deposits

#: Events simulated per chunk: bounds the dense cell grids (~136k cells per event with the
#: defaults) and is fixed so that the random stream, hence the output, does not depend on
#: the number of events per call.
EVENTS_PER_CHUNK = 32

#: Input fields of ``deposit_particles``.
_PARTICLE_FIELDS = ("px", "py", "pz", "energy", "pdgid", "charge", "vx", "vy", "vz")
#: Output fields of ``deposit_particles``.
CELL_FIELDS = ("event", "layer", "ieta", "iphi", "eta", "phi", "energy", "energy_charged",
               "energy_neutral")

# --- deposits to cells -------------------------------------------------------------------------


def deposit_particles(geometry: CalorimeterGeometry, particles: Mapping[str, np.ndarray], event: np.ndarray,
                      n_events: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Simulate the calorimeter response of ``n_events`` events.

    particles: px, py, pz, energy [GeV], pdgid, charge [e], vx, vy, vz [mm], each (n,);
    event: (n,) integer event index in [0, n_events) of each particle; rng: the only
    source of randomness (the same seed gives identical output). Events are simulated in
    chunks of EVENTS_PER_CHUNK, so memory does not grow with n_events beyond the output.

    Returns the zero-suppressed cells of all events as flat arrays (CELL_FIELDS) sorted by
    (event, layer, ieta, iphi): ``event, layer, ieta, iphi`` (int32), ``eta, phi`` (cell
    centres [rad]), ``energy`` (measured: sampling-smeared deposits plus noise, GeV) and
    ``energy_charged``, ``energy_neutral`` (true visible deposits of charged and of
    neutral incident particles, GeV, before smearing and noise; the whole shower of a
    charged pion counts as charged).

    Particles are propagated to the front face (``helix.propagate_to_calorimeter``); those
    that do not reach it, or land at |eta| >= max_abs_eta, deposit nothing, as do
    neutrinos and particles whose available energy (E; kinetic for muons and baryons;
    E + m for antibaryons) is below ``min_energy``. Per particle and layer
    (``pipeline.simulation.shower``):

    * e, gamma: Longo profile over the EM layers' X0, the rest in the first HAD layer;
      lateral core + halo of Moliere-radius width.
    * hadrons: exponential first interaction in lambda, MIP deposit before it (charged
      only), then an EM part (fraction f_em) and a non-EM part scaled by
      ``hadronic_response``, both spread laterally with the wider hadronic profile;
      leakage beyond the last layer is lost.
    * muons: ``mip_per_x0`` * depth in EM layers, ``mip_per_lambda`` * depth in HAD
      layers, in the cell of the impact point.

    Each deposit is smeared (Gamma-distributed stochastic term, per-particle constant
    term), split into up to ``shower.MAX_SUBDEPOSITS`` sub-deposits placed around the
    impact point (those outside the acceptance are lost), and summed into
    cells. Every cell of every layer of every event then gets Gaussian noise of its
    layer's sigma, and cells with |E| <= noise_threshold * sigma are dropped (truth
    included); a layer without noise keeps every cell with a deposit.
    """
    g = geometry
    event = np.asarray(event)
    if event.size == 0:
        event = event.astype(np.int64)
    if event.ndim != 1 or not np.issubdtype(event.dtype, np.integer):
        raise ValueError(f"deposit_particles: event must be a 1-d integer array, "
                         f"got {event.dtype} of shape {event.shape}")
    n = len(event)
    missing = [k for k in _PARTICLE_FIELDS if k not in particles]
    if missing:
        raise ValueError(f"deposit_particles: particles lack field(s) {missing}")
    p = {k: np.asarray(particles[k]) for k in _PARTICLE_FIELDS}
    for key, value in p.items():
        if value.shape != (n,):
            raise ValueError(f"deposit_particles: particles[{key!r}] has shape {value.shape}, "
                             f"expected ({n},) like event")
    if n and (event.min() < 0 or event.max() >= n_events):
        raise ValueError(f"deposit_particles: event indices must lie in [0, {n_events})")
    for key in ("px", "py", "pz", "energy", "vx", "vy", "vz", "charge"):
        p[key] = p[key].astype(np.float64)

    order = np.argsort(event, kind="stable")
    sorted_events = event[order]
    pieces = []
    for start in range(0, n_events, EVENTS_PER_CHUNK):
        stop = min(start + EVENTS_PER_CHUNK, n_events)
        lo, hi = np.searchsorted(sorted_events, [start, stop])
        idx = order[lo:hi]
        chunk = {k: v[idx] for k, v in p.items()}
        pieces.append(_simulate_chunk(g, chunk, event[idx] - start, stop - start, start, rng))
    if not pieces:
        return _empty_cells()
    return {k: np.concatenate([piece[k] for piece in pieces]) for k in CELL_FIELDS}


def _simulate_chunk(g: CalorimeterGeometry, p, local_event, n_events, first_event, rng):
    sub = shower_deposits(g, p, rng)
    sub_particle = sub["particle"]
    sub_layer = sub["layer"]
    sub_eta = sub["impact_eta"][sub_particle] + sub["d_eta"]
    sub_phi = sub["impact_phi"][sub_particle] + sub["d_phi"]
    sub_meas = sub["energy"]
    sub_true = sub["energy_true"]
    charged = (p["charge"] != 0)[sub_particle]
    sub_event = local_event[sub_particle]

    cells = {key: [] for key in CELL_FIELDS}
    for index, item in enumerate(g.layers):
        mask = sub_layer == index
        ieta, iphi = g.cell_index(index, sub_eta[mask], sub_phi[mask])
        inside = ieta >= 0
        n_cells = n_events * item.n_eta * item.nphi
        flat = (sub_event[mask][inside] * item.n_eta + ieta[inside]) * item.nphi + iphi[inside]
        true = sub_true[mask][inside]
        is_charged = charged[mask][inside]
        weights = (sub_meas[mask][inside], np.where(is_charged, true, 0.0), np.where(is_charged, 0.0, true))
        if item.noise > 0:
            # Noise in every cell: a dense grid of the chunk's cells.
            # (bincount returns integers for empty input, hence the casts.)
            measured, e_charged, e_neutral = (np.bincount(flat, w, minlength=n_cells).astype(np.float64)
                                              for w in weights)
            measured += item.noise * rng.standard_normal(n_cells)
            keep = np.flatnonzero(np.abs(measured) > g.noise_threshold * item.noise)
            measured, e_charged, e_neutral = measured[keep], e_charged[keep], e_neutral[keep]
        else:
            # Without noise only the hit cells matter: aggregate them sparsely.
            keep, inverse = np.unique(flat, return_inverse=True)
            measured, e_charged, e_neutral = (np.bincount(inverse, w, minlength=len(keep)).astype(np.float64)
                                              for w in weights)
        ev, rest = np.divmod(keep, item.n_eta * item.nphi)
        ie, ip = np.divmod(rest, item.nphi)
        ce, cp = g.cell_centres(index, ie, ip)
        cells["event"].append((ev + first_event).astype(np.int32))
        cells["layer"].append(np.full(len(keep), index, np.int32))
        cells["ieta"].append(ie.astype(np.int32))
        cells["iphi"].append(ip.astype(np.int32))
        cells["eta"].append(ce)
        cells["phi"].append(cp)
        cells["energy"].append(measured)
        cells["energy_charged"].append(e_charged)
        cells["energy_neutral"].append(e_neutral)
    out = {key: np.concatenate(value) for key, value in cells.items()}
    # Each layer's cells are already in (event, ieta, iphi) order; a stable sort on
    # (event, layer) gives the (event, layer, ieta, iphi) order of the whole chunk.
    order = np.argsort(out["event"].astype(np.int64) * g.n_layers + out["layer"], kind="stable")
    return {key: value[order] for key, value in out.items()}


def _empty_cells() -> dict[str, np.ndarray]:
    ints = ("event", "layer", "ieta", "iphi")
    return {k: np.zeros(0, np.int32 if k in ints else np.float64) for k in CELL_FIELDS}


# --- granularity -------------------------------------------------------------------------------


def rebin(cells: Mapping[str, np.ndarray], geometry: CalorimeterGeometry, layer: int | str,
          factor_eta: int, factor_phi: int) -> dict[str, np.ndarray]:
    """Sum one layer's cells into blocks of factor_eta x factor_phi cells.

    cells: output of deposit_particles (or any mapping with event, layer, ieta, iphi and
    energy fields). Returns the coarse cells of that layer, sorted by (event, ieta, iphi):
    event, layer, ieta, iphi (coarse indices), eta, phi (coarse cell centres) and the sum
    of every energy field, so a coarse image is exactly the sum of the fine one (for the
    super-resolution study; ``geometry.rebin_factors`` gives the factors between layers).
    Only the cells present are summed: rebin zero-suppressed cells for a coarse image of
    the same readout, or simulate with noise_threshold 0 (or without noise) to compare
    with a coarse detector's own zero suppression. Raises ValueError if the factors do
    not divide the layer's grid.
    """
    index = geometry.layer_index(layer)
    item = geometry.layers[index]
    for name, factor, size in (("factor_eta", factor_eta, item.n_eta), ("factor_phi", factor_phi, item.nphi)):
        if int(factor) != factor or factor < 1 or size % int(factor):
            raise ValueError(f"rebin: {name} = {factor!r} does not divide layer {item.name!r}'s {size} cells")
    fe, fp = int(factor_eta), int(factor_phi)
    n_eta, n_phi = item.n_eta // fe, item.nphi // fp
    mask = np.asarray(cells["layer"]) == index
    event = np.asarray(cells["event"])[mask].astype(np.int64)
    ie = np.asarray(cells["ieta"])[mask].astype(np.int64) // fe
    ip = np.asarray(cells["iphi"])[mask].astype(np.int64) // fp
    key = (event * n_eta + ie) * n_phi + ip
    unique, inverse = np.unique(key, return_inverse=True)
    ev, rest = np.divmod(unique, n_eta * n_phi)
    ce_index, cp_index = np.divmod(rest, n_phi)
    eta = -geometry.max_abs_eta + (ce_index + 0.5) * item.deta * fe
    phi = -math.pi + (cp_index + 0.5) * item.dphi * fp
    out = {"event": ev.astype(np.int32), "layer": np.full(len(unique), index, np.int32),
           "ieta": ce_index.astype(np.int32), "iphi": cp_index.astype(np.int32), "eta": eta, "phi": phi}
    for name in ("energy", "energy_charged", "energy_neutral"):
        if name in cells:
            out[name] = np.bincount(inverse, np.asarray(cells[name])[mask], minlength=len(unique))
    return out


def layer_images(cells: Mapping[str, np.ndarray], geometry: CalorimeterGeometry, layer: int | str,
                 n_events: int, field: str = "energy") -> np.ndarray:
    """Dense (n_events, n_eta, n_phi) images of one field of one layer (zero where a cell
    was suppressed). Memory grows with n_events: use on small batches."""
    index = geometry.layer_index(layer)
    n_eta, n_phi = geometry.shape(index)
    mask = np.asarray(cells["layer"]) == index
    image = np.zeros((n_events, n_eta, n_phi))
    image[np.asarray(cells["event"])[mask], np.asarray(cells["ieta"])[mask],
          np.asarray(cells["iphi"])[mask]] = np.asarray(cells[field])[mask]
    return image
