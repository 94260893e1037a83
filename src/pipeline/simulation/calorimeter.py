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

Physics (see ``deposit_particles`` for details): EM showers with a Gamma-function
longitudinal profile (Longo, PDG "Passage of particles through matter") and a core+halo
lateral profile of Moliere-radius width; hadron showers with an exponential first
interaction, a fluctuating EM fraction (Groom/Wigmans) and a non-compensating response
(e/h > 1); muons as minimum ionising particles; Gamma-distributed sampling fluctuations
(stochastic term) times a per-particle calibration factor (constant term); Gaussian cell
noise in every cell with symmetric zero suppression.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy.special import betaincinv, gammainc

from pipeline.simulation.calorimeter_geometry import CalorimeterGeometry
from pipeline.simulation.helix import propagate_to_calorimeter

# --- material constants (not settings: they describe the shower physics, not the detector
# layout) -----------------------------------------------------------------------------------

#: Critical energy [GeV] of the LAr/lead EM calorimeter (lead: 7.4 MeV, LAr: 32 MeV).
CRITICAL_ENERGY = 0.010
#: Longo profile slope b [1/X0] (PDG: b ~ 0.5 for lead to iron).
EM_PROFILE_B = 0.5
#: Mean depth [X0] before a photon converts: 9/7 X0.
PHOTON_CONVERSION_DEPTH = 9.0 / 7.0
#: Moliere radius [mm] of the LAr/lead accordion (lead 16 mm, LAr 90 mm); ~0.023 in
#: eta-phi at 1.5 m.
MOLIERE_RADIUS = 35.0
#: Lateral EM profile: a fraction in a narrow core, the rest in a halo (core + halo
#: Gaussians; ~88% within one Moliere radius).
EM_CORE_FRACTION = 0.85
EM_CORE_WIDTH = 0.35 * MOLIERE_RADIUS
EM_HALO_WIDTH = 1.2 * MOLIERE_RADIUS
#: Lateral profile of the non-EM part of hadron showers [mm]: ~95% within ~1 lambda of
#: steel (~17 cm), i.e. 0.04 core and 0.12 halo in eta-phi at 1.5 m.
HAD_CORE_FRACTION = 0.7
HAD_CORE_WIDTH = 60.0
HAD_HALO_WIDTH = 180.0
#: EM fraction of hadron showers, <f_em> = 1 - (E / E0)^(k - 1) (Groom; pions).
EM_FRACTION_E0 = 1.0
EM_FRACTION_K = 0.82
#: Concentration of the Beta distribution of f_em: sd(f_em) ~ 0.12 at <f_em> = 0.5.
EM_FRACTION_CONCENTRATION = 16.0

# --- sampling of the lateral profile and chunking --------------------------------------------

#: A deposit is split into ceil(E / this) sub-deposits [GeV] (at most MAX_SUBDEPOSITS)
#: placed at random offsets drawn from the lateral profile.
ENERGY_PER_SUBDEPOSIT = 0.25
MAX_SUBDEPOSITS = 24
#: Events simulated per chunk: bounds the dense cell grids (~136k cells per event with the
#: defaults) and is fixed so that the random stream, hence the output, does not depend on
#: the number of events per call.
EVENTS_PER_CHUNK = 32

#: Input fields of ``deposit_particles``.
_PARTICLE_FIELDS = ("px", "py", "pz", "energy", "pdgid", "charge", "vx", "vy", "vz")
#: Output fields of ``deposit_particles``.
CELL_FIELDS = ("event", "layer", "ieta", "iphi", "eta", "phi", "energy", "energy_charged",
               "energy_neutral")

_POINT, _EM, _HAD = 0, 1, 2  # lateral profile classes of a deposit (MIP tracks are points)
_KIND_NONE, _KIND_EM, _KIND_MUON, _KIND_HADRON = 0, 1, 2, 3  # see particle_kinds


# --- longitudinal profiles ---------------------------------------------------------------------


def _gamma_fractions(a, b, start, bounds):
    """Fractions of a Gamma profile dE/dt ~ (b t')^(a-1) exp(-b t'), t' = t - start,
    between consecutive ``bounds``: (n,) a, b, start; (m,) bounds -> (n, m - 1)."""
    x = b[:, None] * np.clip(bounds[None, :] - start[:, None], 0.0, None)
    return np.diff(gammainc(a[:, None], x), axis=1)


def _em_shape(energy):
    """Longo parameters: shower maximum T = ln(E / E_c) [X0] (before the +-0.5 of
    electrons/photons) and its relative fluctuation sigma(ln T) (Grindhammer)."""
    y = np.maximum(energy, CRITICAL_ENERGY * 1.01) / CRITICAL_ENERGY
    ln_y = np.log(y)
    sigma_ln_t = 1.0 / np.maximum(-1.4 + 1.26 * ln_y, 2.0)
    return ln_y, sigma_ln_t


def _available_energy(energy, mass, pdgid, kind):
    """Energy [GeV] a particle can deposit: E for e, gamma and mesons, the kinetic energy
    for muons and baryons, E + m for antibaryons (they annihilate)."""
    apdg = np.abs(pdgid)
    baryon = (kind == _KIND_HADRON) & ((apdg // 1000) % 10 > 0) & (apdg < 10000)
    available = energy.copy()
    kinetic = (kind == _KIND_MUON) | (baryon & (pdgid > 0))
    available[kinetic] -= mass[kinetic]
    anti = baryon & (pdgid < 0)
    available[anti] += mass[anti]
    return np.maximum(available, 0.0)


def particle_kinds(pdgid) -> np.ndarray:
    """Shower kind per particle: 0 invisible (neutrinos), 1 EM (e, gamma), 2 muon,
    3 hadron (everything else)."""
    apdg = np.abs(np.asarray(pdgid))
    kind = np.full(apdg.shape, _KIND_HADRON, np.int8)
    kind[(apdg == 11) | (apdg == 22)] = _KIND_EM
    kind[apdg == 13] = _KIND_MUON
    kind[(apdg == 12) | (apdg == 14) | (apdg == 16)] = _KIND_NONE
    return kind


def _layer_deposits(geometry: CalorimeterGeometry, energy, mass, pdgid, charge, rng):
    """True visible energy [GeV] per particle and layer, by lateral class.

    energy, mass [GeV], pdgid, charge [e]: arrays of shape (n,).
    Returns (point, em, had), each (n, n_layers): MIP-like track deposits, EM shower
    deposits (e, gamma and the EM part of hadron showers) and the non-EM part of hadron
    showers after the hadronic response. Draws the same random numbers for every
    particle so the stream does not depend on the particle types.
    """
    g = geometry
    n, n_layers = len(energy), g.n_layers
    kind = particle_kinds(pdgid)
    available = _available_energy(energy, mass, pdgid, kind)
    kind = np.where(available > g.min_energy, kind, _KIND_NONE)
    em_layer = np.array([x.kind == "em" for x in g.layers])
    n_em = int(em_layer.sum())
    bounds = g.boundaries_lambda()  # (L + 1,) lambda
    bounds_x0 = bounds * g.x0_per_lambda  # the same boundaries in X0 (exact in the EM layers)
    mip_rate = g.mip_per_layer() / g.depth_lambda()  # GeV per lambda, per layer

    u_start = rng.standard_exponential(n)  # photon conversion depth / first interaction
    u_shape = rng.standard_normal(n)  # shower maximum fluctuation
    u_fem = rng.random(n)  # EM fraction of hadron showers (by inverse CDF of a Beta)

    point = np.zeros((n, n_layers))
    em = np.zeros((n, n_layers))
    had = np.zeros((n, n_layers))

    # e and gamma: Longo profile dE/dt ~ t^(a-1) e^(-b t), t_max = (a - 1) / b = ln(E/E_c)
    # - 0.5 (electrons) or + 0.5 (photons), with a log-normal fluctuation of t_max and, for
    # photons, an exponential conversion depth. What passes the EM layers goes to the
    # first HAD layer (there is no dead material), so the visible energy is exactly E.
    sel = np.flatnonzero(kind == _KIND_EM)
    if len(sel):
        e = available[sel]
        photon = np.abs(pdgid[sel]) == 22
        ln_y, sigma = _em_shape(e)
        t_max = np.maximum(ln_y + np.where(photon, 0.5, -0.5), 0.3) * np.exp(sigma * u_shape[sel])
        start = np.where(photon, PHOTON_CONVERSION_DEPTH * u_start[sel], 0.0)
        a = 1.0 + EM_PROFILE_B * t_max
        frac = _gamma_fractions(a, np.full(len(sel), EM_PROFILE_B), start, bounds_x0[: n_em + 1])
        em[sel, :n_em] = e[:, None] * frac
        em[sel, n_em] = e * (1.0 - frac.sum(axis=1))

    # Muons: a fixed loss per unit depth, up to their kinetic energy.
    sel = np.flatnonzero(kind == _KIND_MUON)
    if len(sel):
        point[sel] = _capped(np.broadcast_to(g.mip_per_layer(), (len(sel), n_layers)), available[sel])

    # Hadrons: first interaction at an exponential depth (lambda); before it a charged
    # hadron ionises like a MIP; after it the shower has an EM part f_em (pi0 -> gamma
    # gamma; Beta-distributed about Groom's mean) with a Longo profile in X0 starting at
    # the interaction, and a non-EM part seen with the response h/e (invisible nuclear
    # binding energy, neutrons) and a longer profile in lambda: Gamma with shower maximum
    # 0.2 ln(E) + 0.7 lambda and attenuation length E^0.13 lambda (PDG) counted from the
    # interaction. Energy leaking out of the back of the last layer is lost.
    sel = np.flatnonzero(kind == _KIND_HADRON)
    if len(sel):
        e = available[sel]
        t_int = u_start[sel]
        before = np.clip(np.minimum(t_int[:, None], bounds[None, 1:]) - bounds[None, :-1], 0.0, None)
        # A neutral hadron does not ionise before its first interaction.
        charged_track = _capped(before * mip_rate[None, :], e) * (charge[sel] != 0)[:, None]
        point[sel] = charged_track
        shower = e - charged_track.sum(axis=1)
        mean_fem = 1.0 - (np.maximum(shower, 1e-3) / EM_FRACTION_E0) ** (EM_FRACTION_K - 1.0)
        mean_fem = np.clip(mean_fem, 0.02, 0.98)
        f_em = betaincinv(mean_fem * EM_FRACTION_CONCENTRATION, (1.0 - mean_fem) * EM_FRACTION_CONCENTRATION,
                          u_fem[sel])
        e_em = shower * f_em
        ln_y, _ = _em_shape(e_em)
        a_em = 1.0 + EM_PROFILE_B * np.maximum(ln_y + 0.5, 0.3)
        em[sel] = e_em[:, None] * _gamma_fractions(a_em, np.full(len(sel), EM_PROFILE_B),
                                                   t_int * g.x0_per_lambda, bounds_x0)
        e_had = shower * (1.0 - f_em) * g.hadronic_response
        log_e = np.log(np.maximum(shower, 0.1))
        b_had = 1.0 / np.exp(0.13 * log_e)  # 1 / attenuation length [1/lambda]
        t_max_had = np.maximum(0.2 * log_e + 0.7, 0.2)
        had[sel] = e_had[:, None] * _gamma_fractions(1.0 + b_had * t_max_had, b_had, t_int, bounds)
    return point, em, had


def _capped(per_layer, limit):
    """Per-layer deposits (n, L) cut so that their running sum stays below limit (n,)."""
    total = np.minimum(np.cumsum(per_layer, axis=1), limit[:, None])
    return np.diff(total, axis=1, prepend=0.0)


# --- deposits to cells -------------------------------------------------------------------------


def _particle_deposits(geometry: CalorimeterGeometry, p: Mapping[str, np.ndarray], rng):
    """Deposits of a chunk of particles as records: (particle, layer, lateral class, true
    energy, measured energy), each (n_records,), plus the impact (eta, phi) per particle."""
    g = geometry
    n = len(p["px"])
    eta, phi, reaches = propagate_to_calorimeter(p["px"], p["py"], p["pz"], p["charge"], p["vx"], p["vy"],
                                                 p["vz"], g.bfield, g.radius)
    accepted = reaches & (np.abs(np.nan_to_num(eta, nan=np.inf)) < g.max_abs_eta)
    momentum2 = p["px"] ** 2 + p["py"] ** 2 + p["pz"] ** 2
    mass = np.sqrt(np.maximum(p["energy"] ** 2 - momentum2, 0.0))
    pdgid = np.where(accepted, p["pdgid"], 12)  # out of acceptance: deposit nothing
    point, em, had = _layer_deposits(g, p["energy"], mass, pdgid, p["charge"], rng)

    # Sampling resolution: the stochastic term as Gamma fluctuations of each deposit
    # (variance stochastic^2 * E, independent between layers, never negative; like
    # counting E / stochastic^2 sampled quanta), times a calibration factor common to all
    # of a particle's deposits in one section (the constant term, sigma = constant * E).
    # For a particle contained in one section: sigma/E = stochastic/sqrt(E) (+) constant.
    # The longitudinal leakage of e/gamma showers into the first HAD layer (1-3% at 10 to
    # 100 GeV) is smeared as part of the EM shower, with the last EM layer's terms, so
    # that single e/gamma have the EM resolution: with the HAD sampling term it would add
    # sqrt(0.25 E_leak) (0.9% at 100 GeV), which ATLAS absorbs in its EM constant term.
    # Hadron showers (including their EM part) are smeared with the terms of the layer
    # where they deposit; their intrinsic fluctuations (f_em, first interaction, leakage)
    # come on top.
    n_em = sum(x.kind == "em" for x in g.layers)
    section = np.array([0 if x.kind == "em" else 1 for x in g.layers])
    stochastic = np.array([x.stochastic for x in g.layers])
    constant = np.array([x.constant for x in g.layers])
    calibration = rng.standard_normal((n, 2))

    true = np.stack([point, em, had], axis=2)  # (n, L, 3)
    particle, layer, cls = np.nonzero(true > 0)
    e_true = true[particle, layer, cls]
    kinds = particle_kinds(pdgid[particle])
    em_particle = kinds == _KIND_EM
    # The pi0s of a hadron shower come from all over the hadronic cascade: its EM part
    # spreads laterally like the rest of it.
    cls = np.where((kinds == _KIND_HADRON) & (cls == _EM), _HAD, cls)
    terms = np.where(em_particle, np.minimum(layer, n_em - 1), layer)  # whose resolution terms
    a2 = stochastic[terms] ** 2
    safe_a2 = np.where(a2 > 0, a2, 1.0)
    smeared = np.where(a2 > 0, rng.gamma(e_true / safe_a2, safe_a2), e_true)
    factor = np.maximum(1.0 + constant[terms] * calibration[particle, section[terms]], 0.0)
    e_meas = smeared * factor
    return particle, layer, cls, e_true, e_meas, eta, phi


def _lateral(geometry: CalorimeterGeometry, cls, e_true, rng, energy_per_subdeposit: float = ENERGY_PER_SUBDEPOSIT,
             max_subdeposits: int = MAX_SUBDEPOSITS):
    """Split records into sub-deposits: (record index, d_eta, d_phi) per sub-deposit and
    the number of sub-deposits per record. Offsets are drawn from core + halo Gaussians
    whose widths (lengths on the front face) are converted to eta-phi by the radius."""
    k = np.clip(np.ceil(e_true / energy_per_subdeposit), 1, max_subdeposits)
    k = np.where(cls == _POINT, 1, k).astype(np.int64)
    record = np.repeat(np.arange(len(cls)), k)
    sub_cls = cls[record]
    core_fraction = np.array([1.0, EM_CORE_FRACTION, HAD_CORE_FRACTION])
    core_width = np.array([0.0, EM_CORE_WIDTH, HAD_CORE_WIDTH]) / geometry.radius
    halo_width = np.array([0.0, EM_HALO_WIDTH, HAD_HALO_WIDTH]) / geometry.radius
    u = rng.random(len(record))
    offsets = rng.standard_normal((2, len(record)))
    width = np.where(u < core_fraction[sub_cls], core_width[sub_cls], halo_width[sub_cls])
    return record, width * offsets[0], width * offsets[1], k


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

    Particles are propagated to the front face (propagate_to_calorimeter); those that do
    not reach it, or land at |eta| >= max_abs_eta, deposit nothing, as do neutrinos and
    particles whose available energy (E; kinetic for muons and baryons; E + m for
    antibaryons) is below ``min_energy``. Per particle and layer:

    * e, gamma: Longo profile (see _layer_deposits) over the EM layers' X0, the rest in
      the first HAD layer; lateral core + halo of Moliere-radius width.
    * hadrons: exponential first interaction in lambda, MIP deposit before it (charged
      only), then an EM part (fraction f_em) and a non-EM part scaled by
      ``hadronic_response``, both spread laterally with the wider hadronic profile;
      leakage beyond the last layer is lost.
    * muons: ``mip_per_x0`` * depth in EM layers, ``mip_per_lambda`` * depth in HAD
      layers, in the cell of the impact point.

    Each deposit is smeared (Gamma-distributed stochastic term, per-particle constant
    term; see _particle_deposits), split into up to MAX_SUBDEPOSITS sub-deposits placed
    around the impact point (those outside the acceptance are lost), and summed into
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


def shower_deposits(geometry: CalorimeterGeometry, particles: Mapping[str, np.ndarray], rng: np.random.Generator,
                    energy_per_subdeposit: float = ENERGY_PER_SUBDEPOSIT,
                    max_subdeposits: int = MAX_SUBDEPOSITS) -> dict[str, np.ndarray]:
    """The showers of a chunk of particles as point-like sub-deposits, before any cells.

    particles: the fields of deposit_particles (px, py, pz, energy [GeV], pdgid, charge
    [e], vx, vy, vz [mm]), each (n,). Each particle's deposit in each layer is split into
    ceil(E / energy_per_subdeposit) (at most max_subdeposits) sub-deposits at lateral
    offsets drawn from its profile: more, smaller sub-deposits sample the lateral profile
    more finely (for images finer than the readout) without changing any mean.

    Returns, each (n_sub,) unless noted: ``particle`` (its index), ``layer``, ``d_eta``,
    ``d_phi`` (offset [rad] from the particle's impact), ``energy`` (measured: sampling-
    smeared, GeV), ``energy_true`` (true visible, GeV); and per particle, (n,) each:
    ``impact_eta``, ``impact_phi`` (NaN where the particle does not reach the front face).
    """
    particle, layer, cls, e_true, e_meas, eta, phi = _particle_deposits(geometry, particles, rng)
    record, d_eta, d_phi, k = _lateral(geometry, cls, e_true, rng, energy_per_subdeposit, max_subdeposits)
    return {"particle": particle[record], "layer": layer[record], "d_eta": d_eta, "d_phi": d_phi,
            "energy": (e_meas / k)[record], "energy_true": (e_true / k)[record],
            "impact_eta": eta, "impact_phi": phi}


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
