"""The learning curves (``pipeline.studies.learning_curves``): nested subsets, the replicas'
seeds, the fitted law by hand, the config's checks and the shipped configurations. Their
end-to-end run (the DAG, the table, the figures, MLflow, the full-size first-seed point
against the study's own training) is part of tests/test_public_datasets.py's, on the
reference-layout files: one run of the tiny DAG for both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config_schema import ConfigError
from pipeline.io.hdf5 import RaggedReader
from pipeline.run_config import load_config, resolve_config
from pipeline.studies import active_studies
from pipeline.studies.learning_curves.evaluate import data_scale, power_law, predicted, rejection_precision, summarise
from pipeline.studies.learning_curves.subsets import subset_rows, write_subset
from pipeline.studies.learning_curves.train import replica_config
from pipeline.studies.vertexing.formats import TRACK_GRAPHS

REPO = Path(__file__).resolve().parents[1]
REPO_CONFIGS = REPO / "workflow" / "configs" / "learning_curves"


def test_subsets_are_nested_and_the_whole_is_the_file(track_graphs, tiny_config_session, tmp_path):
    config = tiny_config_session
    with RaggedReader(track_graphs["train"], TRACK_GRAPHS) as reader:
        n = reader.n_rows("jets")
        jets = reader.read("jets", None, 0, n)
        tracks, offsets = reader.read_children("tracks", 0, n)
        attrs = reader.attrs
    rows = {f: subset_rows(n, f, seed=11) for f in (0.2, 0.5, 1.0)}
    assert set(rows[0.2]) < set(rows[0.5]) < set(rows[1.0]) == set(range(n))
    assert [len(r) for r in rows.values()] == [round(0.2 * n), round(0.5 * n), n]
    outputs = {}
    for fraction in (0.5, 1.0):
        outputs[fraction] = tmp_path / f"train_{fraction}.h5"
        assert write_subset(config, "vertexing", TRACK_GRAPHS, track_graphs["train"], outputs[fraction],
                            fraction) == round(fraction * n)
    with RaggedReader(outputs[1.0], TRACK_GRAPHS) as reader:  # row for row the training file
        np.testing.assert_array_equal(reader.read("jets", None, 0, n)["source_jet"], jets["source_jet"])
        np.testing.assert_array_equal(reader.read_children("tracks", 0, n)[0]["features"], tracks["features"])
        np.testing.assert_array_equal(reader.attrs["feature_mean"], attrs["feature_mean"])
    with RaggedReader(outputs[0.5], TRACK_GRAPHS) as reader:  # whole jets, in file order, with their tracks
        half = reader.read("jets", None, 0, reader.n_rows("jets"))
        picked, picked_offsets = reader.read_children("tracks", 0, reader.n_rows("jets"))
    row_of = {source: row for row, source in enumerate(jets["source_jet"])}
    position = np.array([row_of[source] for source in half["source_jet"]])
    assert np.all(np.diff(position) > 0)
    np.testing.assert_array_equal(half["n_tracks"], jets["n_tracks"][position])
    first = position[3]
    np.testing.assert_array_equal(picked["vertex"][picked_offsets[3]:picked_offsets[4]],
                                  tracks["vertex"][offsets[first]:offsets[first + 1]])


def test_the_training_jets_scale_by_a_plain_loop(track_graphs):
    """data_scale's vectorised vertex count and un-standardised track pT against a loop over jets."""
    from pipeline.studies.vertexing.formats import TRACK_FEATURES

    scale = data_scale(track_graphs["train"])
    with RaggedReader(track_graphs["train"], TRACK_GRAPHS) as reader:
        jets = reader.read("jets")
        tracks = reader.read("tracks")
        mean, std = reader.attrs["feature_mean"], reader.attrs["feature_std"]
    k = TRACK_FEATURES.index("log_pt")
    track_pt = np.exp(tracks["features"][:, k] * std[k] + mean[k])
    assert scale["track pT [GeV]"] == pytest.approx((track_pt.mean(), track_pt.std()), rel=1e-5)
    assert scale["jet pT [GeV]"][0] == pytest.approx(jets["pt"].mean(), rel=1e-5)
    start = 0
    vertices = []
    for n in jets["n_tracks"]:
        vertices.append(len(set(tracks["vertex"][start:start + n].tolist())))
        start += n
    vertices = np.array(vertices)
    for name, code in {"b": 5, "c": 4, "light": 0}.items():
        mine = jets["flavour"] == code
        if mine.any():
            assert scale[f"{name} jets: true vertices"][0] == pytest.approx(vertices[mine].mean())
            assert scale[f"{name} jets: tracks"][0] == pytest.approx(jets["n_tracks"][mine].mean())
    assert sum(scale[f"{name} jets: fraction"][0] for name in ("b", "c", "light")) == pytest.approx(1.0)


def test_a_rejections_test_set_precision_by_hand():
    # 10,000 QCD jets at R = 100: 100 pass, Poisson 10 %; at R = 2,500: 4 pass, 50 %.
    assert rejection_precision(100, 10_000) == pytest.approx(0.1)
    assert rejection_precision(2500, 10_000) == pytest.approx(0.5)


def test_the_fitted_law_by_hand():
    n = np.array([1e3, 3e3, 1e4, 3e4])
    fit = power_law(n, 1 - 0.5 * n ** -0.3, "auc")
    assert fit == pytest.approx((0.5, -0.3))
    assert predicted(fit, "auc", 1e6) == pytest.approx(1 - 0.5 * 1e6 ** -0.3)
    fit = power_law(n, 2 * n ** 0.5, "rejection_at_0.3")
    assert fit == pytest.approx((2.0, 0.5)) and predicted(fit, "rejection_at_0.3", 1e6) == pytest.approx(2000.0)
    assert power_law(n[:2], [0.5, 0.6], "f1_b") is None  # two points fit no law
    assert power_law(n[:3], [0.5, 1.0, 1.0], "f1_b") is None  # F1 = 1 has no log(1 - F1)


def test_the_seed_spread_by_hand():
    rows = [{"study": "jet_images", "method": "cnn", "fraction": 0.5, "train_jets": 10, "replica": r,
             "metric": "auc", "value": v} for r, v in enumerate((0.80, 0.84, 0.88))]
    (summary,) = summarise(rows)
    assert summary["mean"] == pytest.approx(0.84) and summary["std"] == pytest.approx(0.04)
    assert summary["seeds"] == 3


def test_replicas_differ_by_their_seed_only():
    config = {"seed": 5, "learning_curves": {}}
    assert replica_config(config, 0)["seed"] == 5  # the run's own seed
    seeds = [replica_config(config, r)["seed"] for r in (1, 2, 1)]
    assert seeds[0] == seeds[2] and len({5, *seeds}) == 3  # derived, one per replica, reproducible


def test_the_config(tmp_path):
    base = {"samples": {"t": {"process": "ttbar"}}}
    config = resolve_config(base)
    assert "learning_curves" not in [s.name for s in active_studies(config)]  # off by default
    on = resolve_config({**base, "learning_curves": {"studies": ["vertexing"], "methods": ["rnn", "cnn"]}})
    assert [s.name for s in active_studies(on)][-1] == "learning_curves"
    for section, message in [
        ({"studies": ["vertexing"], "fractions": [0.5, 0.1]}, r"learning_curves.fractions: \[0.5, 0.1\]"),
        ({"studies": ["vertexing"], "methods": ["cnn"]}, "none of \\['cnn'\\] is a network of 'vertexing'"),
        ({"studies": ["particle_flow"]}, "'particle_flow' is not one of"),
        ({"fractions": [0.0]}, "0.0 is less than or equal to the minimum of 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve_config({**base, "learning_curves": section})


def test_the_shipped_configurations_reach_ten_times_the_default_run():
    default = load_config(REPO / "config.yaml")["samples"]["ttbar"]
    vertexing = load_config(REPO_CONFIGS / "vertexing.yaml")
    sample = vertexing["samples"]["ttbar"]
    events = sample["events_per_shard"] * sample["shards"]
    assert events >= 10 * default["events_per_shard"] * default["shards"]
    # Its smallest point is the default run's size; its training is the default run's but shorter
    # (docs/learning_curves.md), the same at every point.
    assert events * vertexing["learning_curves"]["fractions"][0] == default["events_per_shard"] * default["shards"]
    assert vertexing["training"]["batch_size"] == load_config(REPO / "config.yaml")["training"]["batch_size"]
    assert vertexing["training"]["max_epochs"] == 10 and vertexing["learning_curves"]["seeds"] >= 2
    assert {s.name for s in active_studies(vertexing)} >= {"vertexing", "learning_curves"}
    images = load_config(REPO_CONFIGS / "jet_images.yaml")
    assert images["learning_curves"]["studies"] == ["jet_images"]
    assert images["jet_images"]["training"]["max_epochs"] == 12
    # The particle-level overlay, merged as Snakemake merges two --configfile's: the same
    # events (seed, samples) and training as jet_images.yaml, images of the constituents.
    import yaml

    def merged(base, overlay):
        return {k: merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                for k, v in {**base, **overlay}.items()}

    raw = [yaml.safe_load((REPO_CONFIGS / name).read_text())
           for name in ("jet_images.yaml", "jet_images_particles.yaml")]
    particles = resolve_config(merged(*raw), source="jet_images_particles.yaml")
    assert particles["jet_images"]["objects"] == "particles" and images["jet_images"]["objects"] == "calorimeter"
    assert particles["samples"] == images["samples"] and particles["seed"] == images["seed"]
    assert particles["jet_images"]["training"] == images["jet_images"]["training"]
    assert set(particles["learning_curves"]["fractions"]) <= set(images["learning_curves"]["fractions"])
