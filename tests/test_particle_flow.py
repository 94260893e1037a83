"""The particle-flow study's images, tracks, loader and metrics: physics and behaviour that could fail.

The networks, topo-clusters and the parametrised baseline have their own test files
(test_particle_flow_models.py, test_particle_flow_topoclusters.py,
test_particle_flow_parametrised.py).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from pipeline.io.hdf5 import RaggedReader, parent_index, read_tree
from pipeline.run_config import resolve_config
from pipeline.simulation.gun import generate_gun_shard
from pipeline.simulation.helix import C_LIGHT
from pipeline.simulation.window_geometry import WindowGeometry
from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES
from pipeline.studies.particle_flow.images import build_image_shard
from pipeline.studies.particle_flow.metrics import barycentres, position_resolution, response_summary, weighted_mse
from pipeline.studies.particle_flow.tracks import extrapolate

PI_PLUS = {"pdgid": 211, "energy": [2.0, 20.0], "eta": [-0.4, 0.4], "phi": [-3.1, 3.1]}
PI_ZERO_OFFSET = {"pdgid": 111, "energy": [2.0, 20.0],
                  "offset": {"from": 0, "theta": [math.pi / 200, math.pi / 100], "phi": [math.pi / 200, math.pi / 100]}}
PI_ZERO_ALONE = {"pdgid": 111, "energy": [2.0, 20.0], "eta": [-0.4, 0.4], "phi": [-3.1, 3.1]}


def gun_config(particles, events=120, **layers_noise) -> dict:
    raw = {"seed": 11, "samples": {"gun": {"process": "particle_gun", "events_per_shard": events, "shards": 1,
                                           "gun": {"particles": particles}}},
           "particle_flow": {"sample": "gun", "calibration": "gun"}}
    if layers_noise:
        defaults = resolve_config(copy.deepcopy(raw))["particle_flow"]["calorimeter"]["layers"]
        raw["particle_flow"]["calorimeter"] = {"layers": [{**layer, **layers_noise} for layer in defaults]}
    return resolve_config(raw)


def images_of(tmp_path, config, name="images"):
    generated, images = tmp_path / f"{name}_gen.h5", tmp_path / f"{name}.h5"
    generate_gun_shard(config, "gun", 0, generated, progress=False)
    build_image_shard(config, generated, images, progress=False)
    with RaggedReader(images, PARTICLE_FLOW_IMAGES) as reader:
        arrays, offsets = read_tree(reader, 0, reader.n_rows("events"))
    return arrays, offsets, images


@pytest.fixture(scope="module")
def pflow(tmp_path_factory):
    """(config, arrays, offsets, path) of 120 pi+ pi0 events with the default detector."""
    config = gun_config([PI_PLUS, PI_ZERO_OFFSET])
    return (config, *images_of(tmp_path_factory.mktemp("pflow"), config))


def test_extrapolation_follows_the_hand_computed_helix():
    # pT = 1 GeV, q = +1 from the origin along +x in 2 T: R = pT / (0.3 B) = 1667.8 mm.
    # At r = 1500 mm the azimuth is -asin(r / 2R); there the direction has turned by
    # 2 asin(r / 2R), and a straight line goes on to r = 2000 mm.
    bfield, front = 2.0, 1500.0
    radius = 1.0 / (C_LIGHT * bfield)
    half_turn = math.asin(front / (2 * radius))
    eta, phi, reaches = extrapolate([1.0], [0.0], [0.5], [1.0], [0.0], [0.0], [0.0], bfield, front, [front, 2000.0])
    assert reaches[0]
    assert phi[0, 0] == pytest.approx(-half_turn, abs=1e-9)
    x0, y0 = front * math.cos(-half_turn), front * math.sin(-half_turn)
    tx, ty = math.cos(-2 * half_turn), math.sin(-2 * half_turn)
    b = x0 * tx + y0 * ty
    u = -b + math.sqrt(b * b - (front**2 - 2000.0**2))
    assert phi[0, 1] == pytest.approx(math.atan2(y0 + u * ty, x0 + u * tx), abs=1e-9)
    # z grows with the transverse path: the arc R * 2 * half_turn, then u, times pz / pT.
    z1 = 0.5 * (radius * 2 * half_turn + u)
    assert eta[0, 1] == pytest.approx(math.asinh(z1 / 2000.0), abs=1e-9)
    # A negative particle bends the other way; a neutral one does not bend.
    _, phi_minus, _ = extrapolate([1.0], [0.0], [0.5], [-1.0], [0.0], [0.0], [0.0], bfield, front, [front])
    _, phi_neutral, _ = extrapolate([1.0], [0.0], [0.5], [0.0], [0.0], [0.0], [0.0], bfield, front, [front, 3000.0])
    assert phi_minus[0, 0] == pytest.approx(half_turn, abs=1e-9)
    np.testing.assert_allclose(phi_neutral[0], 0.0, atol=1e-12)


def test_pi0_alone_is_all_neutral_and_pi_plus_alone_all_charged(tmp_path):
    neutral, _, _ = images_of(tmp_path, gun_config([PI_ZERO_ALONE], events=40), "neutral")
    charged, _, _ = images_of(tmp_path, gun_config([PI_PLUS], events=40), "charged")
    for arrays, empty in ((neutral, "energy_charged"), (charged, "energy_neutral")):
        for collection in ("cells", "fine_cells"):
            assert np.all(arrays[collection][empty] == 0), (collection, empty)
    # ... and the other truth holds the showers (pi0: two photons, every Dalitz e+ e- too).
    assert neutral["fine_cells"]["energy_neutral"].sum() > 0.9 * neutral["events"]["neutral_energy"].sum()
    assert np.all(neutral["events"]["has_track"] == 0) and np.all(charged["events"]["has_track"] == 1)


def test_detector_cells_are_the_sums_of_their_fine_cells(tmp_path):
    # With a negligible noise every cell with a deposit is a topo-cluster seed, so every
    # detector cell is stored and can be compared with its block of fine cells.
    config = gun_config([PI_PLUS, PI_ZERO_OFFSET], events=30, noise=1e-7)
    arrays, offsets, _ = images_of(tmp_path, config, "sums")
    geometry = WindowGeometry.from_config(config)
    cells, fine = arrays["cells"], arrays["fine_cells"]
    cell_event, fine_event = parent_index(offsets["cells"]), parent_index(offsets["fine_cells"])
    for layer in range(geometry.n_layers):
        fe, fp = geometry.factors(layer)
        n_eta, n_phi = geometry.shapes[layer]
        f = fine["layer"] == layer
        key = (fine_event[f] * n_eta + fine["ieta"][f] // fe) * n_phi + fine["iphi"][f] // fp
        c = cells["layer"] == layer
        cell_key = (cell_event[c] * n_eta + cells["ieta"][c]) * n_phi + cells["iphi"][c]
        size = 30 * n_eta * n_phi
        for field, tolerance in (("energy", 1e-5), ("energy_charged", 1e-5), ("energy_neutral", 1e-5)):
            summed = np.bincount(key, fine[field][f].astype(np.float64), minlength=size)
            np.testing.assert_allclose(cells[field][c], summed[cell_key], atol=tolerance, rtol=1e-5)
        # Every block with a fine deposit above the seed threshold (4 sigma) is a stored cell.
        summed = np.bincount(key, fine["energy"][f].astype(np.float64), minlength=size)
        assert set(np.flatnonzero(summed > 1e-6).tolist()) <= set(cell_key.tolist())


def test_images_physics(pflow):
    config, arrays, offsets, _ = pflow
    events, cells = arrays["events"], arrays["cells"]
    event = parent_index(offsets["cells"])
    n = len(events["event"])
    neutral_deposit = np.bincount(event, cells["energy_neutral"], minlength=n)
    charged_deposit = np.bincount(event, cells["energy_charged"], minlength=n)
    # Photons deposit (nearly) all their energy; a pion about h/e of it (e/h > 1).
    assert 0.9 < np.median(neutral_deposit / events["neutral_energy"]) < 1.02
    assert 0.55 < np.median(charged_deposit / events["charged_energy"]) < 0.9
    # The window is centred on the track: the pi+ lands at its centre, the pi0 pi/200 to
    # pi/100 away in theta and phi (about 0.02-0.045 in (eta, phi) at eta ~ 0).
    assert np.all(np.hypot(events["charged_eta"], events["charged_phi"]) < 0.02)
    distance = np.hypot(events["neutral_eta"], events["neutral_phi"])
    assert np.all((distance > 0.015) & (distance < 0.06))
    # The track: smeared momentum close to the pion's energy; its extrapolation moves on
    # in phi with depth (the track is bent, the calorimeter field-free).
    ratio = events["track_p"] / events["charged_energy"]
    assert abs(np.median(ratio) - 1) < 0.01 and 0.002 < np.std(ratio) < 0.05
    drift = np.abs(events["track_layer_phi"][:, -1] - events["track_layer_phi"][:, 0])
    assert np.all(np.diff(np.abs(events["track_layer_phi"]), axis=1).mean(axis=0) > 0)
    assert np.median(drift) > 0.005
    # Topo-clusters: every stored cell in one, numbered from 0 within the event.
    assert np.all(cells["cluster"] >= 0)
    assert np.all(np.bincount(event, cells["cluster"] == 0, minlength=n) > 0)


def test_same_seed_same_images(pflow, tmp_path):
    config, arrays, _, _ = pflow
    again, _, _ = images_of(tmp_path, config, "again")
    for collection in arrays:
        for key, value in arrays[collection].items():
            np.testing.assert_array_equal(value, again[collection][key], err_msg=f"{collection}.{key}")


def test_loader_batches_are_the_file_cells(pflow):
    from pipeline.studies.particle_flow.batches import TRACK_LAYER
    from pipeline.studies.particle_flow.data import ParticleFlowBatches

    config, arrays, offsets, path = pflow
    geometry = WindowGeometry.from_config(config)
    batches = ParticleFlowBatches(path, 50, evaluation=True)
    assert len(batches) == 3 and batches.shapes == geometry.shapes
    batch = batches[1]
    rows = np.arange(50, 100)
    event = parent_index(offsets["cells"])
    cells = arrays["cells"]
    for layer in range(geometry.n_layers):
        sel = np.isin(event, rows) & (cells["layer"] == layer)
        image = batch["layers"][layer].numpy()
        assert image.sum() == pytest.approx(cells["energy"][sel].sum(), rel=1e-5)
        np.testing.assert_array_equal(batch["cluster"][layer] >= 0, image != 0)
        weight, fraction = batch["weight"][layer].numpy(), batch["fraction"][layer].numpy()
        assert (weight * fraction).sum() == pytest.approx(cells["energy_neutral"][sel].sum(), rel=1e-4)
        assert fraction.min() >= 0 and fraction.max() <= 1
    track = batch["track"].numpy()
    np.testing.assert_allclose(track.reshape(50, -1).max(axis=1), arrays["events"]["track_p"][rows], rtol=1e-6)
    # The track pixel is where the track crosses em2.
    i, j = np.unravel_index(track.reshape(50, -1).argmax(axis=1), track.shape[1:])
    eta, phi = geometry.cell_centres(None)
    assert np.all(np.abs(eta[i] - arrays["events"]["track_layer_eta"][rows, TRACK_LAYER]) <= 0.8 / 64 / 2 + 1e-6)
    assert np.all(np.abs(phi[j] - arrays["events"]["track_layer_phi"][rows, TRACK_LAYER]) <= 0.8 / 64 / 2 + 1e-6)


def test_a_damaged_chunk_in_a_loaded_file_is_an_error_naming_it(pflow, tmp_path):
    # The file opens and its schema checks: only reading the batch's cells finds the damage.
    import h5py

    from pipeline.io.hdf5 import DataFileError
    from pipeline.studies.particle_flow.data import ParticleFlowBatches

    path = tmp_path / "damaged.h5"
    path.write_bytes(pflow[3].read_bytes())
    with h5py.File(path, "r") as f:
        chunk = f["cells/energy"].id.get_chunk_info(0)
    batches = ParticleFlowBatches(path, 50)
    with open(path, "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write(b"\xff" * chunk.size)
    with pytest.raises(DataFileError, match=f"{path}: reading events 0:50 failed .Can't synchronously read data"):
        batches[0]


def test_bad_study_settings_are_refused_with_the_key():
    raw = {"samples": {"gun": {"process": "particle_gun", "gun": {"particles": [PI_PLUS]}},
                       "tt": {"process": "ttbar"}},
           "particle_flow": {"sample": "gun", "calibration": "tt"}}
    with pytest.raises(ValueError, match=r"particle_flow\.calibration: sample 'tt' has process 'ttbar'"):
        resolve_config(copy.deepcopy(raw))
    raw["particle_flow"]["calibration"] = "gun"
    layers = resolve_config(copy.deepcopy(raw))["particle_flow"]["calorimeter"]["layers"]
    raw["particle_flow"]["calorimeter"] = {"layers": [{**layers[0], "n_eta": 48}, *layers[1:]]}
    with pytest.raises(ValueError, match=r"layers\[0\] \('em1'\)\.n_eta: 48 does not divide .*fine = 64"):
        resolve_config(copy.deepcopy(raw))
    raw["particle_flow"]["calorimeter"] = {"layers": layers[:5]}
    with pytest.raises(ValueError, match="six layers"):
        resolve_config(copy.deepcopy(raw))


def test_response_summary_by_hand():
    # Ratios 0.5, 1, 1, 1.5 (and an event without neutral energy, left out): median 1,
    # quartiles 0.875 and 1.125.
    summary = response_summary(np.array([1.0, 2.0, 4.0, 6.0, 3.0]), np.array([2.0, 2.0, 4.0, 4.0, 0.0]))
    assert summary == {"n_events": 4, "response_median": pytest.approx(0.0),
                       "resolution_iqr": pytest.approx(0.25)}
    assert response_summary(np.zeros(2), np.zeros(2))["n_events"] == 0


def test_cell_mse_and_positions_by_hand():
    assert weighted_mse(np.array([1.0, 3.0]), np.array([2.0, 6.0])) == pytest.approx(0.5)
    assert math.isnan(weighted_mse(np.zeros(2), np.zeros(2)))
    image = np.zeros((2, 3, 3))
    image[0, 0, 0], image[0, 2, 1] = 1.0, 3.0  # barycentre eta = (1 * 0 + 3 * 2) / 4, phi = 3 / 4
    image[0, 1, 1] = -5.0  # noise: ignored
    centres = barycentres(image, np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(centres[0], [1.5, 0.75])
    assert np.all(np.isnan(centres[1]))
    predicted = np.array([[0.0, 0.0], [3.0, 4.0], [np.nan, 0.0]])
    assert position_resolution(predicted, np.zeros((3, 2))) == pytest.approx(np.quantile([0.0, 5.0], 0.68))


def test_build_and_calibrate_run_without_torch(tmp_path):
    """Neither step trains a network: they must not pay torch's and Lightning's imports."""
    import subprocess
    import sys

    import yaml

    raw = {"seed": 5, "samples": {"gun": {"process": "particle_gun", "events_per_shard": 30, "shards": 1,
                                          "gun": {"particles": [PI_PLUS]}}},
           "particle_flow": {"sample": "gun", "calibration": "gun"},
           "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    generate_gun_shard(resolve_config(raw), "gun", 0, tmp_path / "gen.h5", progress=False)
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        f"main(['particle_flow', 'build', '--config', {str(config)!r}, '--generated', {str(tmp_path / 'gen.h5')!r},"
        f" '--output', {str(tmp_path / 'images.h5')!r}, '--quiet'])\n"
        f"main(['particle_flow', 'calibrate', '--config', {str(config)!r}, '--inputs', {str(tmp_path / 'images.h5')!r},"
        f" '--output', {str(tmp_path / 'templates.json')!r}, '--quiet'])\n"
        "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr, result.stderr[-2000:]
    from pipeline.studies.particle_flow.templates import Templates

    templates = Templates.load(tmp_path / "templates.json")
    assert 0.4 < templates.inclusive_mean < 0.9  # a pion's E/p in a non-compensating calorimeter
