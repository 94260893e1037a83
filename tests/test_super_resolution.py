"""The super-resolution study's detector, config checks, images and split files: behaviour
that could fail. The interpolations, physics observables and metrics are tested in
test_super_resolution_physics.py, the batches and networks in test_super_resolution_models.py,
the whole study end to end in test_workflow.py."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pipeline.config import ConfigError
from pipeline.io.hdf5 import RaggedReader
from pipeline.run_config import resolve_config
from pipeline.simulation.gun import generate_gun_shard
from pipeline.studies.particle_flow.batches import file_geometry
from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES
from pipeline.studies.super_resolution import samples as study_samples
from pipeline.studies.super_resolution.detector import detector_config

PI_ZERO = {"pdgid": 111, "energy": [7.0, 12.0], "eta": [-0.4, 0.4], "phi": [-3.1, 3.1]}
PI_PLUS = {"pdgid": 211, "energy": [2.0, 20.0], "eta": [-0.4, 0.4], "phi": [-3.1, 3.1]}


def raw_config(tmp_path, events=40) -> dict:
    return {"seed": 3, "samples": {"pi0": {"process": "particle_gun", "events_per_shard": events, "shards": 1,
                                           "gun": {"particles": [PI_ZERO]}}},
            "particle_flow": {"sample": "pi0", "calibration": "pi0"},
            "super_resolution": {"sample": "pi0", "pi0_sample": "pi0"},
            "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}


def test_the_detector_has_the_studys_cells_and_the_particle_flow_calorimeter_otherwise(tmp_path):
    config = resolve_config(raw_config(tmp_path))
    derived = detector_config(config)
    layers, original = derived["particle_flow"]["calorimeter"]["layers"], config["particle_flow"]["calorimeter"]["layers"]
    assert [(layer["n_eta"], layer["n_phi"]) for layer in layers] == [(64, 32), (32, 32), (32, 32), (16, 16),
                                                                       (16, 16), (8, 8)]
    assert original[1]["n_eta"] == 64  # the particle-flow study's own second layer is untouched
    assert [{k: v for k, v in layer.items() if k not in ("n_eta", "n_phi", "noise")} for layer in layers] == [
        {k: v for k, v in layer.items() if k not in ("n_eta", "n_phi", "noise")} for layer in original]
    # Ganged noise: em2's cells are four of the particle-flow detector's, so twice its sigma; the others keep theirs.
    assert [layer["noise"] for layer in layers] == pytest.approx(
        [layer["noise"] * (2 if i == 1 else 1) for i, layer in enumerate(original)])
    per_cell = {**config, "super_resolution": {**config["super_resolution"], "noise": "per_cell"}}
    assert [layer["noise"] for layer in detector_config(per_cell)["particle_flow"]["calorimeter"]["layers"]] == [
        layer["noise"] for layer in original]
    assert study_samples(config) == ["pi0", "pi0"]
    assert study_samples({**config, "super_resolution": {**config["super_resolution"], "pi0_sample": "none"}}) == []


def test_bad_study_settings_are_refused_with_the_key(tmp_path):
    raw = raw_config(tmp_path)
    raw["samples"]["tt"] = {"process": "ttbar"}
    raw["super_resolution"]["pi0_sample"] = "tt"
    with pytest.raises(ConfigError, match=r"super_resolution\.pi0_sample: sample 'tt' has process 'ttbar'"):
        resolve_config(copy.deepcopy(raw))
    raw["super_resolution"]["pi0_sample"] = "pi0"
    raw["super_resolution"]["granularity"] = [[64, 32], [24, 32], [32, 32], [16, 16], [16, 16], [8, 8]]
    with pytest.raises(ConfigError, match=r"super_resolution\.granularity\[1\] \('em2'\): n_eta = 24 does not "
                                          r"divide particle_flow\.calorimeter\.fine = 64"):
        resolve_config(copy.deepcopy(raw))
    raw["super_resolution"]["granularity"] = [[64, 32]] * 5
    with pytest.raises(ConfigError, match="super_resolution.granularity"):
        resolve_config(copy.deepcopy(raw))
    del raw["super_resolution"]["granularity"]
    raw["super_resolution"]["physics"] = {"layer": "em9"}
    with pytest.raises(ConfigError, match=r"super_resolution\.physics\.layer: 'em9' is not a layer"):
        resolve_config(copy.deepcopy(raw))


def test_images_and_split_files_hold_the_studys_detector(tmp_path):
    """Shards and split files store the detector they were built with (a split once stored
    the particle-flow study's cells); the coarse truth is the exact sum of the fine truth."""
    raw = raw_config(tmp_path, events=30)
    raw["samples"]["pi0"]["gun"]["particles"] = [PI_PLUS, {**PI_ZERO, "energy": [2.0, 20.0]}]
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = resolve_config(raw)
    generate_gun_shard(config, "pi0", 0, tmp_path / "gen.h5", progress=False)
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        f"main(['super_resolution', 'build', '--config', {str(config_path)!r}, '--generated', "
        f"{str(tmp_path / 'gen.h5')!r}, '--output', {str(tmp_path / 'images.h5')!r}, '--quiet'])\n"
        f"main(['super_resolution', 'split', '--config', {str(config_path)!r}, '--sample', 'pi0', '--inputs', "
        f"{str(tmp_path / 'images.h5')!r}, '--train', {str(tmp_path / 'train.h5')!r}, '--val', "
        f"{str(tmp_path / 'val.h5')!r}, '--test', {str(tmp_path / 'test.h5')!r}])\n"
        "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr, result.stderr[-2000:]  # building and splitting train nothing
    expected = [tuple(cells) for cells in detector_config(config)["super_resolution"]["granularity"]]
    events = 0
    for name in ("images", "train", "val", "test"):
        with RaggedReader(tmp_path / f"{name}.h5", PARTICLE_FLOW_IMAGES) as reader:
            shapes, fine, _ = file_geometry(reader)
            assert (shapes, fine) == (expected, 64), name
            if name != "images":
                events += reader.n_rows("events")
            else:
                cells = reader.read("cells", ["layer", "ieta", "iphi", "energy_charged", "energy_neutral"])
                fine_cells = reader.read("fine_cells", ["layer", "ieta", "iphi", "energy_charged", "energy_neutral"])
                cell_offsets, fine_offsets = reader.offsets("cells"), reader.offsets("fine_cells")
    assert events == 30
    # The em2 truth of the first event: each 32 x 32 cell is the sum of its 2 x 2 fine cells.
    coarse, summed = np.zeros((32, 32)), np.zeros((32, 32))
    rows = slice(cell_offsets[0], cell_offsets[1])
    sel = cells["layer"][rows] == 1
    coarse[cells["ieta"][rows][sel], cells["iphi"][rows][sel]] = (cells["energy_charged"][rows][sel]
                                                                 + cells["energy_neutral"][rows][sel])
    rows = slice(fine_offsets[0], fine_offsets[1])
    sel = fine_cells["layer"][rows] == 1
    np.add.at(summed, (fine_cells["ieta"][rows][sel] // 2, fine_cells["iphi"][rows][sel] // 2),
              fine_cells["energy_charged"][rows][sel] + fine_cells["energy_neutral"][rows][sel])
    clustered = coarse != 0
    assert clustered.sum() > 3
    np.testing.assert_allclose(coarse[clustered], summed[clustered], rtol=1e-5, atol=1e-7)


def test_downstream_inputs_are_the_fine_images_summed_to_the_particle_flow_cells_where_the_readout_counts():
    from pipeline.studies.super_resolution.downstream import particle_flow_inputs

    rng = np.random.default_rng(1)
    fine = rng.random((2, 2, 4, 4))
    # Layer 0: this detector 2 x 2 cells (factors 2 x 2), the particle flow's 4 x 4 (1 x 1);
    # layer 1: both 2 x 1 cells of 2 x 4 fine cells.
    coarse = [np.zeros((2, 2, 2)), np.zeros((2, 2, 1))]
    coarse[0][0, 1, 0] = 0.3  # one clustered cell in event 0: fine rows 2-3, columns 0-1
    coarse[1][1, 0, 0] = -0.01  # a (negative) noise cell is read out too
    images, counted = particle_flow_inputs(fine, coarse, [(2, 2), (2, 4)], [(1, 1), (2, 4)])
    assert images[0].shape == (2, 4, 4) and images[1].shape == (2, 2, 1)
    expected = np.zeros((2, 4, 4))
    expected[0, 2:, :2] = fine[0, 0, 2:, :2]
    np.testing.assert_allclose(images[0], expected, rtol=1e-6)
    assert counted[0].sum() == 4 and counted[1].sum() == 1
    np.testing.assert_allclose(images[1][1, 0, 0], fine[1, 1, :2, :].sum(), rtol=1e-6)
    assert images[1][0].sum() == 0
    with pytest.raises(ValueError, match="do not nest"):
        particle_flow_inputs(fine, coarse, [(2, 2), (2, 4)], [(1, 1), (4, 4)])


def test_the_particle_flow_reference_needs_its_cnn_rows(tmp_path):
    from pipeline.studies.super_resolution.downstream import particle_flow_reference

    metrics = tmp_path / "metrics.csv"
    metrics.write_text("method,energy_bin,n_events,response_median,resolution_iqr,cell_mse,position_resolution\n"
                       "graph,all,5,0.1,0.2,0.01,0.003\ncnn,all,5,0.02,0.07,0.01,0.003\n")
    rows = particle_flow_reference(metrics)
    assert rows == [{"method": "particle_flow detector", "energy_bin": "all", "n_events": 5, "response_median": 0.02,
                     "resolution_iqr": 0.07, "cell_mse": 0.01, "position_resolution": 0.003}]
    metrics.write_text("method,energy_bin\ngraph,all\n")
    with pytest.raises(ValueError, match="no cnn rows"):
        particle_flow_reference(metrics)
