"""The Pythia 8 particle gun (simulation.gun): its kinematics, Pythia's decays and their
truth links, the offset geometry, reproducibility, the generate command, and every bad gun
refused up front with the key named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from pipeline.config import ConfigError
from pipeline.io.hdf5 import RaggedReader, parent_index, read_tree
from pipeline.run_config import resolve_config
from pipeline.simulation.checks import check_generators
from pipeline.simulation.formats import GUN_EVENTS
from pipeline.simulation.gun import generate_gun_shard
from pipeline.simulation.pythia import pythia_settings

EVENTS = 2000
#: GeV per (T mm): a helix of transverse momentum pT [GeV] has radius pT / (C B) mm.
C_LIGHT = 0.299792458e-3
#: The offset ranges of |dtheta| and |dphi|, rad.
OFFSET = [math.pi / 200, math.pi / 100]

PION_PAIR = {
    "particles": [
        {"pdgid": 211, "energy": [2.0, 20.0], "eta": [-0.5, 0.5], "phi": [-math.pi, math.pi]},
        {"pdgid": 111, "energy": [2.0, 20.0], "offset": {"from": 0, "theta": OFFSET, "phi": OFFSET}},
    ],
    "impact": {"radius": 1500.0, "bfield": 2.0},
}
#: Longer decay chains (eta -> 3 pi0 -> 6 photons; K0S -> pi0 pi0 or pi+ pi-, centimetres away), a
#: displaced gun vertex, a neutral reference particle and a reference that is itself an offset particle.
CHAINS = {
    "particles": [
        {"pdgid": 221, "energy": [5.0, 10.0], "eta": [-1.0, 1.0], "phi": [-1.0, 1.0], "vertex": [10.0, -5.0, 20.0]},
        {"pdgid": 310, "energy": [5.0, 10.0], "offset": {"from": 0, "theta": [0.0, 0.1], "phi": [0.0, 0.1]}},
        {"pdgid": -211, "energy": [1.0, 3.0], "offset": {"from": 1, "theta": [0.0, 0.1], "phi": [0.0, 0.1]}},
    ],
}


def gun_config(gun: dict = PION_PAIR, events: int = EVENTS, batch_size: int = 500, seed: int = 5) -> dict:
    config = {"seed": seed, "samples": {"pflow": {"process": "particle_gun", "gun": gun, "events_per_shard": events,
                                                  "shards": 2, "batch_size": batch_size}}}
    resolved = resolve_config(config, source="gun-test")
    check_generators(resolved, source="gun-test")
    return resolved


def read(path) -> dict:
    with RaggedReader(path, GUN_EVENTS) as reader:
        arrays, offsets = read_tree(reader, 0, reader.n_rows("events"))
        attrs = reader.attrs
    return {"arrays": arrays, "offsets": offsets, "attrs": attrs,
            "event": {name: parent_index(offsets[name]) for name in ("primaries", "particles")}}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The pion pair's shard 0 (twice, the second time with another batch size), shard 1,
    and a shard of the decay chains."""
    tmp = tmp_path_factory.mktemp("gun")
    runs = {"pair": (gun_config(), 0), "again": (gun_config(batch_size=333), 0), "shard1": (gun_config(), 1),
            "chains": (gun_config(CHAINS, events=400), 0)}
    for name, (config, shard) in runs.items():
        generate_gun_shard(config, "pflow", shard, tmp / f"{name}.h5", progress=False)
    return {name: read(tmp / f"{name}.h5") for name in runs}


def primaries_of(data, k: int) -> dict:
    """{field: (n_events, k)} of the gun's particles."""
    return {name: values.reshape(-1, k) for name, values in data["arrays"]["primaries"].items()}


def sums_per_primary(data, k: int, field: str) -> np.ndarray:
    """(n_events, k) sum of ``field`` over the visible particles from each gun particle."""
    particles = data["arrays"]["particles"]
    key = data["event"]["particles"] * k + particles["primary"]
    n_events = len(data["arrays"]["events"]["event"])
    return np.bincount(key, weights=particles[field].astype(np.float64), minlength=n_events * k).reshape(-1, k)


def test_gun_settings_switch_off_the_process_level_and_set_no_beams():
    settings = pythia_settings(gun_config()["samples"]["pflow"], 42)
    assert "ProcessLevel:all = off" in settings and "Random:seed = 42" in settings
    assert not [line for line in settings if line.startswith(("Beams:", "PhaseSpace:"))]


def test_energies_are_uniform_in_their_range(shards):
    energy = primaries_of(shards["pair"], 2)["energy"]
    assert energy.shape == (EVENTS, 2)
    assert energy.min() >= 2.0 and energy.max() <= 20.0
    assert energy.min() < 2.1 and energy.max() > 19.9
    # Uniform on [2, 20]: mean 11, standard deviation 18 / sqrt(12); 5 sigma of the mean.
    assert np.all(np.abs(energy.mean(axis=0) - 11.0) < 5 * 18 / math.sqrt(12 * EVENTS))
    assert abs(np.mean(energy < 6.5) - 0.25) < 0.05


def test_directions_follow_eta_and_phi_ranges(shards):
    p = primaries_of(shards["pair"], 2)
    eta = np.arcsinh(p["pz"][:, 0] / np.hypot(p["px"][:, 0], p["py"][:, 0]))
    phi = np.arctan2(p["py"][:, 0], p["px"][:, 0])
    assert np.abs(eta).max() <= 0.5 + 1e-9 and np.abs(eta).max() > 0.49
    assert np.histogram(phi, bins=4, range=(-math.pi, math.pi))[0].min() > EVENTS / 4 - 5 * math.sqrt(EVENTS / 4)
    mass = np.sqrt(p["energy"] ** 2 - p["px"] ** 2 - p["py"] ** 2 - p["pz"] ** 2)
    np.testing.assert_allclose(mass, [[0.13957, 0.13498]] * EVENTS, atol=1e-4)


def test_the_pi0_decays_into_two_photons_and_the_pi_plus_stays(shards):
    data = shards["pair"]
    particles, event = data["arrays"]["particles"], data["event"]["particles"]
    assert set(np.unique(particles["primary"])) == {0, 1}
    charged = particles["primary"] == 0
    # The pi+ is stable in Pythia: one particle, the gun's own.
    assert np.bincount(event[charged], minlength=EVENTS).tolist() == [1] * EVENTS
    assert np.all(particles["pdgid"][charged] == 211) and np.all(particles["charge"][charged] == 1)
    np.testing.assert_allclose(particles["px"][charged], primaries_of(data, 2)["px"][:, 0], rtol=1e-6)
    # The pi0: gamma gamma (98.8 %) or its Dalitz decay e+ e- gamma (1.2 %).
    photons = np.bincount(event[~charged], weights=particles["pdgid"][~charged] == 22, minlength=EVENTS)
    n_from_pi0 = np.bincount(event[~charged], minlength=EVENTS)
    two_photons = (photons == 2) & (n_from_pi0 == 2)
    assert 0.975 < two_photons.mean() < 0.997
    dalitz = ~two_photons
    assert np.all((n_from_pi0[dalitz] == 3) & (photons[dalitz] == 1))
    assert set(np.unique(particles["pdgid"][~charged])) <= {22, 11, -11}


@pytest.mark.parametrize("run, k", [("pair", 2), ("chains", 3)])
def test_what_comes_from_each_gun_particle_adds_up_to_it(shards, run, k):
    data = shards[run]
    primaries = primaries_of(data, k)
    for field in ("energy", "px", "py", "pz"):
        np.testing.assert_allclose(sums_per_primary(data, k, field), primaries[field],
                                   rtol=1e-6, atol=1e-6 * primaries["energy"].max())
    charge = sums_per_primary(data, k, "charge")
    np.testing.assert_array_equal(charge, primaries["charge"])


def test_decay_chains_keep_their_primary_and_start_at_the_gun_vertex(shards):
    data = shards["chains"]
    particles, primaries = data["arrays"]["particles"], primaries_of(data, 3)
    assert np.all(primaries["vx"][:, 0] == 10.0) and np.all(primaries["vz"][:, 0] == 20.0)
    assert np.all(primaries["vx"][:, 1:] == 0.0)
    from_eta = particles["primary"] == 0
    # eta -> gamma gamma, 3 pi0 (six photons), pi+ pi- pi0, ...: all made at the gun's vertex, give or take
    # the pi0 flight (c tau = 25 nm, microns at these energies).
    assert np.abs(particles["vx"][from_eta] - 10.0).max() < 0.01
    assert np.abs(particles["vz"][from_eta] - 20.0).max() < 0.01
    assert np.bincount(data["event"]["particles"][from_eta], minlength=400).max() >= 6
    # K0S decays away from the origin: its proper decay length L m / p is exponential with mean c tau = 26.84 mm.
    from_k0s = np.flatnonzero(particles["primary"] == 1)
    first = from_k0s[np.unique(data["event"]["particles"][from_k0s], return_index=True)[1]]
    assert len(first) == 400
    flight = np.sqrt(particles["vx"][first] ** 2 + particles["vy"][first] ** 2 + particles["vz"][first] ** 2)
    momentum = np.sqrt(primaries["px"][:, 1] ** 2 + primaries["py"][:, 1] ** 2 + primaries["pz"][:, 1] ** 2)
    assert abs(np.mean(flight * 0.497611 / momentum) - 26.84) < 5 * 26.84 / math.sqrt(400)
    assert np.all(particles["pdgid"][particles["primary"] == 2] == -211)


def direction(p: dict, j: int) -> tuple[np.ndarray, np.ndarray]:
    """(theta, phi) of gun particle j's momentum."""
    return (np.arctan2(np.hypot(p["px"][:, j], p["py"][:, j]), p["pz"][:, j]),
            np.arctan2(p["py"][:, j], p["px"][:, j]))


def test_the_offset_particle_points_next_to_where_the_reference_meets_the_calorimeter(shards):
    p = primaries_of(shards["pair"], 2)
    radius, bfield = PION_PAIR["impact"]["radius"], PION_PAIR["impact"]["bfield"]
    # The pi+ from the origin: a helix of radius R turns clockwise (q B > 0) by asin(r / 2R) in
    # azimuth by the time it reaches the radius r; z advances by the arc length times pz / pT.
    pt = np.hypot(p["px"][:, 0], p["py"][:, 0])
    big_r = pt / (C_LIGHT * bfield)
    turn = np.arcsin(radius / (2 * big_r))
    theta0, phi0 = direction(p, 0)
    impact_phi = phi0 - turn
    impact_theta = np.arctan2(radius, 2 * big_r * turn * p["pz"][:, 0] / pt)
    theta1, phi1 = direction(p, 1)
    dtheta = theta1 - impact_theta
    dphi = np.angle(np.exp(1j * (phi1 - impact_phi)))
    for delta in (dtheta, dphi):
        assert np.all((np.abs(delta) >= OFFSET[0] - 1e-9) & (np.abs(delta) <= OFFSET[1] + 1e-9))
        assert 0.45 < np.mean(delta > 0) < 0.55
    # The field matters here: from the momentum, the pi0 is typically tenths of a radian away in phi.
    assert np.median(np.abs(np.angle(np.exp(1j * (phi1 - phi0))))) > 0.05


def test_same_seed_same_events_whatever_the_batch_size_and_another_shard_differs(shards):
    pair, again, other = shards["pair"], shards["again"], shards["shard1"]
    for collection, fields in pair["arrays"].items():
        for name, values in fields.items():
            np.testing.assert_array_equal(values, again["arrays"][collection][name], err_msg=f"{collection}.{name}")
    assert pair["attrs"]["seed"] == again["attrs"]["seed"] != other["attrs"]["seed"]
    assert pair["attrs"]["gun_seed"] != other["attrs"]["gun_seed"]
    assert not np.any(pair["arrays"]["primaries"]["energy"] == other["arrays"]["primaries"]["energy"])
    assert pair["attrs"]["sample"] == "pflow" and "ProcessLevel:all = off" in pair["attrs"]["pythia_settings"]


def test_the_generate_command_writes_a_gun_events_file(tmp_path):
    from pipeline.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"samples": {"pflow": {"process": "particle_gun", "gun": PION_PAIR,
                                                           "events_per_shard": 20}}}))
    output = tmp_path / "shard_1.h5"
    assert main(["generate", "--config", str(config), "--sample", "pflow", "--shard", "1", "--output", str(output),
                 "--quiet"]) == 0
    data = read(output)
    assert len(data["arrays"]["events"]["event"]) == 20 and len(data["arrays"]["primaries"]["pdgid"]) == 40


def with_particle(k: int, **changes) -> dict:
    """The pion pair with particle k's settings changed (a value None removes the key)."""
    particles = [dict(p) for p in PION_PAIR["particles"]]
    particles[k].update(changes)
    particles[k] = {key: value for key, value in particles[k].items() if value is not None}
    return {"samples": {"pflow": {"process": "particle_gun", "gun": {"particles": particles}}}}


BAD_GUNS = [
    ("negative-energy", with_particle(0, energy=[-1.0, 5.0]),
     "samples.pflow.gun.particles.0.energy.0: -1.0 is less than or equal to the minimum of 0"),
    ("unknown-pdgid", with_particle(1, pdgid=999999),
     "samples.pflow.gun.particles[1].pdgid: 999999 is not a particle in Pythia's particle data; expected a PDG id"),
    ("pdgid-zero", with_particle(1, pdgid=0), "samples.pflow.gun.particles.1.pdgid: 0: expected a PDG id, never 0"),
    ("coloured", with_particle(0, pdgid=21), "samples.pflow.gun.particles[0].pdgid: 21 (g) is coloured"),
    ("offset-from-itself", with_particle(1, offset={"from": 1, "theta": OFFSET, "phi": OFFSET}),
     "samples.pflow.gun.particles[1].offset.from: 1 is not an earlier particle; expected 0 to 0"),
    ("offset-first", with_particle(0, eta=None, phi=None, offset={"from": 0, "theta": OFFSET, "phi": OFFSET}),
     "samples.pflow.gun.particles[0].offset.from: 0 is not an earlier particle; expected eta and phi for the first"),
    ("eta-reversed", with_particle(0, eta=[0.5, -0.5]),
     "samples.pflow.gun.particles[0].eta: [0.5, -0.5] is reversed; expected [lo, hi] with lo <= hi"),
    ("energy-reversed", with_particle(0, energy=[20.0, 2.0]),
     "samples.pflow.gun.particles[0].energy: [20.0, 2.0] is reversed"),
    ("offset-reversed", with_particle(1, offset={"from": 0, "theta": OFFSET[::-1], "phi": OFFSET}),
     "samples.pflow.gun.particles[1].offset.theta: [0.031415"),
    ("below-mass", with_particle(1, energy=[0.1, 1.0]),
     "samples.pflow.gun.particles[1].energy: min 0.1 GeV is not above the mass of pi0 (0.13498 GeV)"),
    ("eta-and-offset", with_particle(1, eta=[-0.5, 0.5]),
     "samples.pflow.gun.particles[1]: both offset and eta given; expected eta and phi, or offset"),
    ("no-direction", with_particle(0, phi=None),
     "samples.pflow.gun.particles[0]: no phi; expected eta and phi, or offset"),
    ("phi-beyond-pi", with_particle(0, phi=[-4.0, 0.0]),
     "samples.pflow.gun.particles.0.phi.0: -4.0 is less than the minimum of -3.14159"),
    ("no-gun", {"samples": {"pflow": {"process": "particle_gun"}}}, "samples.pflow: 'gun' is a required property"),
    ("gun-on-ttbar", {"samples": {"pflow": {"process": "ttbar", "gun": PION_PAIR}}},
     "only a sample with process: particle_gun takes a gun"),
]


@pytest.mark.parametrize("config, message", [case[1:] for case in BAD_GUNS], ids=[case[0] for case in BAD_GUNS])
def test_a_bad_gun_is_refused_before_any_work_naming_the_key(config, message):
    with pytest.raises(ConfigError) as err:
        check_generators(resolve_config(config, source="bad-gun.yaml"), source="bad-gun.yaml")
    assert str(err.value).startswith("bad-gun.yaml: invalid configuration:")
    assert message in str(err.value)
