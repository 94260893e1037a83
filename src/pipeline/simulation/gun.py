"""A Pythia 8 particle gun: events made of a few chosen particles (a pi+ and a pi0 next to
it, say) with uniform energies and directions, decayed by Pythia, one shard at a time.

Why: studies of overlapping showers (particle flow) need events whose truth is known
particle by particle. A particle can be aimed at a small angular offset from an earlier
one's impact on the calorimeter face, where a charged particle arrives bent by the field,
so that the two showers overlap by construction.

Pythia has no batch interface for events filled by the user, so one short Python loop per
event fills the record, lets Pythia decay it and reads it back. Everything else (the
kinematics of the whole shard, impact points, mother links, charges) is vectorised, and
the kinematics are drawn from their own random stream up front: a shard's events do not
depend on the batch size.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from tqdm import tqdm

from pipeline.io.hdf5 import RaggedWriter
from pipeline.seeds import derive_seed
from pipeline.simulation.formats import GUN_EVENTS
from pipeline.simulation.helix import propagate_to_calorimeter
from pipeline.simulation.kinematics import wrap_phi
from pipeline.simulation.pythia import ChargeTable
from pipeline.simulation.record import NEUTRINOS
from pipeline.simulation.shard_generator import ShardGenerator

log = logging.getLogger(__name__)


def check_gun(gun: Mapping, particle_data) -> None:
    """Raise ValueError for a gun (a schema-valid ``samples.<name>.gun``) that cannot be
    generated; the message starts with the key relative to the gun (``particles[1].pdgid``).

    Each particle needs a PDG id in Pythia's ``particle_data`` of a colourless particle
    (Pythia cannot hadronise a lone quark or gluon), an energy range [min, max] with
    mass < min <= max (GeV), and either eta and phi ranges in order (lo <= hi) or an
    offset from an earlier particle with ranges in order.
    """
    for k, particle in enumerate(gun["particles"]):
        where = f"particles[{k}]"
        pdgid = particle["pdgid"]
        if not particle_data.isParticle(pdgid):
            raise ValueError(f"{where}.pdgid: {pdgid} is not a particle in Pythia's particle data; "
                             "expected a PDG id such as 211 (pi+), 111 (pi0) or 22 (photon)")
        if particle_data.colType(pdgid) != 0:
            raise ValueError(f"{where}.pdgid: {pdgid} ({particle_data.name(pdgid)}) is coloured and Pythia "
                             "cannot hadronise it alone; expected a colourless particle")
        low, high = particle["energy"]
        _check_order(f"{where}.energy", low, high)
        mass = particle_data.m0(pdgid)
        if low <= mass:
            raise ValueError(f"{where}.energy: min {low} GeV is not above the mass of {particle_data.name(pdgid)} "
                             f"({mass:g} GeV); expected min > {mass:g}")
        angles = [key for key in ("eta", "phi") if key in particle]
        if "offset" in particle:
            if angles:
                raise ValueError(f"{where}: both offset and {' and '.join(angles)} given; "
                                 "expected eta and phi, or offset")
            offset = particle["offset"]
            if offset["from"] >= k:
                expected = f"0 to {k - 1}" if k else "eta and phi for the first particle, which has none before it"
                raise ValueError(f"{where}.offset.from: {offset['from']} is not an earlier particle; "
                                 f"expected {expected}")
            _check_order(f"{where}.offset.theta", *offset["theta"])
            _check_order(f"{where}.offset.phi", *offset["phi"])
        elif len(angles) < 2:
            missing = " and ".join(key for key in ("eta", "phi") if key not in particle)
            raise ValueError(f"{where}: no {missing}; expected eta and phi, or offset")
        else:
            _check_order(f"{where}.eta", *particle["eta"])
            _check_order(f"{where}.phi", *particle["phi"])


def _check_order(where: str, low: float, high: float) -> None:
    if low > high:
        raise ValueError(f"{where}: [{low}, {high}] is reversed; expected [lo, hi] with lo <= hi")


@dataclass
class GunParticles:
    """The gun's particles of n events; per-particle settings have shape (k,), the drawn
    kinematics (n, k): momenta and energies in GeV, vertices in mm."""

    pdgid: np.ndarray  # (k,)
    mass: np.ndarray  # (k,) Pythia's nominal mass m0
    charge: np.ndarray  # (k,) e
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    energy: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    vz: np.ndarray


def draw_gun(gun: Mapping, particle_data, n_events: int, rng: np.random.Generator) -> GunParticles:
    """Draw the gun's particles of ``n_events`` events, all at once (see GunParticles).

    Energies are uniform in their range; directions uniform in eta and phi, or, for an
    offset particle, the reference particle's direction at its impact on the ``impact``
    cylinder (propagate_to_calorimeter: a helix for a charged particle) with theta and
    phi moved by +-dtheta and +-dphi (each sign random). A neutral offset particle from
    the origin thus hits the cylinder at exactly that offset. A reference particle that
    never reaches the cylinder (a looper) lends its momentum direction instead.
    """
    specs = gun["particles"]
    k = len(specs)
    pdgid = np.array([p["pdgid"] for p in specs], np.int32)
    mass = np.array([particle_data.m0(int(i)) for i in pdgid])
    charge = ChargeTable(particle_data)(pdgid)
    vertex = np.broadcast_to(np.array([p["vertex"] for p in specs], np.float64), (n_events, k, 3))
    energy, theta, phi = (np.empty((n_events, k)) for _ in range(3))
    px, py, pz = (np.empty((n_events, k)) for _ in range(3))
    impact = gun["impact"]
    for j, spec in enumerate(specs):
        energy[:, j] = rng.uniform(*spec["energy"], n_events)
        if "offset" in spec:
            ref = spec["offset"]["from"]
            eta, phi_ref, reaches = propagate_to_calorimeter(
                px[:, ref], py[:, ref], pz[:, ref], charge[ref], *vertex[:, ref].T,
                bfield=impact["bfield"], radius=impact["radius"])
            theta_ref = np.where(reaches, 2.0 * np.arctan(np.exp(-eta)), theta[:, ref])
            phi_ref = np.where(reaches, phi_ref, phi[:, ref])
            dtheta = rng.uniform(*spec["offset"]["theta"], n_events)
            dphi = rng.uniform(*spec["offset"]["phi"], n_events)
            sign_theta, sign_phi = rng.choice([-1.0, 1.0], size=(2, n_events))
            theta[:, j] = theta_ref + sign_theta * dtheta
            phi[:, j] = wrap_phi(phi_ref + sign_phi * dphi)
        else:
            theta[:, j] = 2.0 * np.arctan(np.exp(-rng.uniform(*spec["eta"], n_events)))
            phi[:, j] = rng.uniform(*spec["phi"], n_events)
        p = np.sqrt(energy[:, j] ** 2 - mass[j] ** 2)
        px[:, j] = p * np.sin(theta[:, j]) * np.cos(phi[:, j])
        py[:, j] = p * np.sin(theta[:, j]) * np.sin(phi[:, j])
        pz[:, j] = p * np.cos(theta[:, j])
    return GunParticles(pdgid=pdgid, mass=mass, charge=charge, px=px, py=py, pz=pz, energy=energy,
                        vx=vertex[..., 0], vy=vertex[..., 1], vz=vertex[..., 2])


#: Columns read from Pythia's record per particle, in this order.
_RECORD_COLUMNS = ("pdgid", "status", "mother1", "px", "py", "pz", "energy", "vx", "vy", "vz")


def decay_events(pythia, guns: GunParticles, events: slice) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Put the gun's particles of ``events`` into Pythia's record one event at a time,
    let Pythia decay them (``pythia.next()``) and read the records back.

    Returns (columns, sizes): every record entry but the system entry 0, flat over the
    events, as arrays named by _RECORD_COLUMNS (mother1 the mother's index in its
    event's record, 0 for a gun particle; vertices in mm), and each event's number of
    entries (n_events,). Entries 1 to k of each event are the gun's k particles.
    """
    record = pythia.event
    ids, masses = guns.pdgid.tolist(), guns.mass.tolist()
    # Only particles away from the origin need a vertex: Pythia's default is the origin.
    vertices = [tuple(v) if any(v) else None for v in
                np.stack([guns.vx[0], guns.vy[0], guns.vz[0]], axis=1).tolist()]
    momenta = np.stack([guns.px[events], guns.py[events], guns.pz[events], guns.energy[events]], axis=-1).tolist()
    rows, sizes = [], []
    for number, event_momenta in enumerate(momenta, start=events.start):
        record.reset()
        for pdgid, mass, vertex, (px, py, pz, e) in zip(ids, masses, vertices, event_momenta):
            index = record.append(pdgid, 1, 0, 0, px, py, pz, e, mass)
            if vertex is not None:
                record[index].vProd(*vertex, 0.0)
        if not pythia.next():
            raise RuntimeError(f"Pythia failed to decay gun event {number}")
        particles = record.particles()[1:]
        rows.extend((q.id(), q.status(), q.mother1(), q.px(), q.py(), q.pz(), q.e(), q.xProd(), q.yProd(), q.zProd())
                    for q in particles)
        sizes.append(len(particles))
    table = np.array(rows, np.float64).reshape(-1, len(_RECORD_COLUMNS))
    columns = dict(zip(_RECORD_COLUMNS, table.T))
    for name in ("pdgid", "status", "mother1"):
        columns[name] = columns[name].astype(np.int64)
    return columns, np.array(sizes, np.int64)


def primary_of(mother1: np.ndarray, sizes: np.ndarray, n_primaries: int) -> np.ndarray:
    """(n,) index (0 to k - 1) of the gun particle each record entry is or descends from.

    mother1: (n,) each entry's mother, an index into its event's record (whose entries
    1 to k are the gun's particles); the entries of decay_events, flat over events of
    ``sizes`` entries each. Follows the mother links of all entries at once.
    """
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)  # flat position of each event's record entry 1
    index = np.arange(len(mother1)) - first + 1  # each entry's own index in its record
    todo = np.flatnonzero(index > n_primaries)
    while len(todo):
        index[todo] = mother1[first[todo] + index[todo] - 1]
        todo = todo[index[todo] > n_primaries]
    return index - 1


def gun_event_arrays(guns: GunParticles, events: slice, columns: Mapping[str, np.ndarray], sizes: np.ndarray,
                     charges: ChargeTable) -> tuple[dict, dict]:
    """Everything the gun_events file stores for the events ``events``: (arrays, counts)."""
    n, k = len(sizes), len(guns.pdgid)
    primary = primary_of(columns["mother1"], sizes, k)
    visible = np.flatnonzero((columns["status"] > 0) & ~np.isin(np.abs(columns["pdgid"]), NEUTRINOS))
    event = np.repeat(np.arange(n), sizes)
    particles = {name: columns[name][visible] for name in ("px", "py", "pz", "energy", "pdgid", "vx", "vy", "vz")}
    particles.update(charge=charges(particles["pdgid"]), primary=primary[visible])
    primaries = {name: getattr(guns, name)[events].ravel() for name in ("px", "py", "pz", "energy", "vx", "vy", "vz")}
    primaries.update(pdgid=np.tile(guns.pdgid, n), charge=np.tile(guns.charge, n))
    arrays = {
        "events": {"event": np.arange(events.start, events.stop), "weight": np.ones(n)},
        "primaries": primaries,
        "particles": particles,
    }
    counts = {"primaries": np.full(n, k), "particles": np.bincount(event[visible], minlength=n)}
    return arrays, counts


def generate_gun_shard(
    config: Mapping,
    sample_name: str,
    shard: int,
    output: str | Path,
    progress: bool = True,
) -> dict[str, float]:
    """Generate one shard of a particle_gun sample into a gun_events HDF5 file.

    Pythia's seed is derive_seed(seed, sample, shard, "pythia") as for every sample; the
    kinematics come from a NumPy stream seeded derive_seed(seed, sample, shard, "gun"),
    drawn for the whole shard before Pythia runs. Raises ValueError for a gun that
    check_gun refuses. Returns the wall time (s) per step: init (Pythia and file set-up),
    draw (kinematics), pythia (filling, decaying and reading the records), arrays, write.
    """
    started = time.perf_counter()
    generator = ShardGenerator.start(config, sample_name, shard)
    sample, pythia, charges = generator.sample, generator.pythia, generator.charges
    check_gun(sample["gun"], pythia.particleData)
    gun_seed = derive_seed(config["seed"], sample_name, shard, "gun")
    attrs = {**generator.attrs, "gun_seed": gun_seed}
    timing: dict[str, float] = defaultdict(float)
    n_total, batch_size = sample["events_per_shard"], sample["batch_size"]
    with RaggedWriter(output, GUN_EVENTS, attrs) as writer, tqdm(
        total=n_total, desc=f"generate {sample_name}/{shard}", unit="ev",
        disable=not progress, mininterval=5.0,
    ) as bar:
        t0 = time.perf_counter()
        timing["init"] = t0 - started
        guns = draw_gun(sample["gun"], pythia.particleData, n_total, np.random.default_rng(gun_seed))
        timing["draw"] = time.perf_counter() - t0
        for start in range(0, n_total, batch_size):
            events = slice(start, min(start + batch_size, n_total))
            t0 = time.perf_counter()
            columns, sizes = decay_events(pythia, guns, events)
            t1 = time.perf_counter()
            arrays, counts = gun_event_arrays(guns, events, columns, sizes, charges)
            t2 = time.perf_counter()
            writer.append(arrays, counts)
            t3 = time.perf_counter()
            for step, dt in zip(("pythia", "arrays", "write"), (t1 - t0, t2 - t1, t3 - t2)):
                timing[step] += dt
            bar.update(len(sizes))
        closing = time.perf_counter()
    timing["write"] += time.perf_counter() - closing  # the final flush and rename
    log.info("generated %d gun events of %s shard %d: %s", n_total, sample_name, shard,
             ", ".join(f"{k} {v:.2f}s" for k, v in timing.items()))
    return dict(timing)
