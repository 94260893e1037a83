"""The learning curves (``pipeline.studies.learning_curves``): nested subsets, the replicas'
seeds, the fitted law by hand, the config's checks, the shipped configurations, and a tiny
end-to-end run whose full-size, first-seed point is the study's own training."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.config_schema import ConfigError
from pipeline.io.hdf5 import RaggedReader
from pipeline.ml.checkpoints import load_checkpoint
from pipeline.run_config import load_config, resolve_config
from pipeline.studies import active_studies, study
from pipeline.studies.jet_images.formats import jet_images_schema
from pipeline.studies.learning_curves.evaluate import power_law, predicted, summarise
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
    # Its smallest point is the default run's size; its training settings are the default run's.
    assert events * vertexing["learning_curves"]["fractions"][0] == default["events_per_shard"] * default["shards"]
    assert {s.name for s in active_studies(vertexing)} >= {"vertexing", "learning_curves"}
    images = load_config(REPO_CONFIGS / "jet_images.yaml")
    assert images["learning_curves"]["studies"] == ["jet_images"]
    assert images["jet_images"]["training"]["max_epochs"] == 12


@pytest.mark.slow
def test_a_tiny_learning_curve_end_to_end(tmp_path):
    """Two points, two seeds, Set2Graph and the CNN, on the tiny run's samples: the curve's
    table and figures, one MLflow run per training; the full-size point of the first seed is
    the vertexing study's own training, weight for weight."""
    import torch
    from mlflow.tracking import MlflowClient
    from workflow_runs import job_counts, run_snakemake, write_config

    from pipeline.tiny import tiny_workflow_config

    raw = tiny_workflow_config()
    raw["learning_curves"] = {"studies": ["vertexing", "jet_images"], "methods": ["set2graph", "cnn"],
                              "fractions": [0.5, 1.0], "seeds": 2}
    config_path = write_config(tmp_path, raw)
    targets = ["results/learning_curves/curve.csv", "results/vertexing/models/set2graph.ckpt"]
    result = run_snakemake(tmp_path, *targets, "--configfile", str(config_path))
    jobs = job_counts(result.stdout + result.stderr)
    assert jobs["train_learning_curves"] == 8 and jobs["subset_learning_curves"] == 4
    results = tmp_path / "results" / "learning_curves"
    with open(results / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 3 + 2 * 2 * 2  # set2graph: F1 b, c, light; cnn: AUC, rejection
    sizes = set()
    for fraction in ("0.5", "1"):
        with RaggedReader(results / "jet_images" / "data" / f"train_{fraction}.h5", jet_images_schema()) as reader:
            sizes.add(str(reader.n_rows("jets")))
    assert {r["train_jets"] for r in rows if r["method"] == "cnn"} == sizes and len(sizes) == 2
    table = (results / "curve.md").read_text()
    assert "| set2graph | f1_b |" in table and "| cnn | auc |" in table and "1,211,000 jets" in table
    for name in ("vertexing", "jet_images"):
        assert (results / f"{name}.png").stat().st_size > 1000 and (results / f"{name}.pdf").exists()
    # The full-size, first-seed point is the vertexing study's own training.
    mine = load_checkpoint(results / "models" / "set2graph_1_seed0.ckpt")["state_dict"]
    theirs = load_checkpoint(tmp_path / "results" / "vertexing" / "models" / "set2graph.ckpt")["state_dict"]
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    other = load_checkpoint(results / "models" / "set2graph_1_seed1.ckpt")["state_dict"]
    assert not all(torch.equal(other[k], theirs[k]) for k in theirs)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    names = sorted(r.info.run_name for r in runs if r.info.run_name.startswith("learning_curves."))
    config = resolve_config(yaml.safe_load(config_path.read_text()))
    assert names == sorted(study("learning_curves").runs(config))
    # Logged under this study (name and tags), though the networks and checkpoints are their studies'.
    assert all(r.info.run_name == ".".join(r.data.tags[k] for k in ("study", "step", "method")) for r in runs)
    assert {r.data.tags["rule"] for r in runs if r.info.run_name.startswith("learning_curves.")} == {
        "train_learning_curves", "evaluate_learning_curves"}
    tags = {(r.data.tags["learning_curve.fraction"], r.data.tags["learning_curve.replica"])
            for r in runs if r.info.run_name == "learning_curves.train.cnn"}
    assert tags == {("0.5", "0"), ("0.5", "1"), ("1.0", "0"), ("1.0", "1")}
