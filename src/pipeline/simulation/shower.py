"""Showers of single particles in the layered calorimeter, before any cells: how much
energy a particle leaves in each layer, its sampling fluctuations, and where around the
impact point it lands.

EM showers with a Gamma-function longitudinal profile (Longo, PDG "Passage of particles
through matter") and a core+halo lateral profile of Moliere-radius width; hadron showers
with an exponential first interaction, a fluctuating EM fraction (Groom/Wigmans) and a
non-compensating response (e/h > 1); muons as minimum ionising particles;
Gamma-distributed sampling fluctuations (stochastic term) times a per-particle calibration
factor (constant term). Depths and units: ``pipeline.simulation.calorimeter``; the cells,
noise and zero suppression are there too.
"""

from __future__ import annotations

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

# --- lateral sampling --------------------------------------------------------------------------

#: A deposit is split into ceil(E / this) sub-deposits [GeV] (at most MAX_SUBDEPOSITS)
#: placed at random offsets drawn from the lateral profile.
ENERGY_PER_SUBDEPOSIT = 0.25
MAX_SUBDEPOSITS = 24

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


# --- smearing and lateral spread ---------------------------------------------------------------


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


def shower_deposits(geometry: CalorimeterGeometry, particles: Mapping[str, np.ndarray], rng: np.random.Generator,
                    energy_per_subdeposit: float = ENERGY_PER_SUBDEPOSIT,
                    max_subdeposits: int = MAX_SUBDEPOSITS) -> dict[str, np.ndarray]:
    """The showers of a chunk of particles as point-like sub-deposits, before any cells.

    particles: the fields of ``calorimeter.deposit_particles`` (px, py, pz, energy [GeV],
    pdgid, charge [e], vx, vy, vz [mm]), each (n,). Each particle's deposit in each layer is split into
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
