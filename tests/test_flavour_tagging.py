"""Vertex-informed flavour tagging: graphs, the tagger's symmetries, metrics, edge files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from default_config import default_optimiser
from sklearn.metrics import f1_score, recall_score, roc_curve

from pipeline.io.hdf5 import DataFileError
from pipeline.ml.layers import index_mean, index_sum
from pipeline.ml.roc import rejection_at
from pipeline.studies.flavour_tagging.data import FlavourBatches, FlavourDataModule, dense_to_graph, flavour_classes
from pipeline.studies.flavour_tagging.edges import partition_scores, score_edges
from pipeline.studies.flavour_tagging.metrics import (
    b_discriminant,
    balance_weights,
    bootstrap_spread,
    classification_metrics,
)
from pipeline.studies.flavour_tagging.models import EdgeScoreConv, FlavourTagger
from pipeline.studies.vertexing.classical import classical_partition
from pipeline.studies.vertexing.data import TrackGraphBatches
from pipeline.studies.vertexing.formats import TRACK_FEATURES

F = len(TRACK_FEATURES)


def two_jets(seed: int = 0):
    """Padded jets of 3 and 5 tracks with random features and symmetric edge scores."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, F, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    score = torch.rand(2, 5, 5, generator=g)
    score = 0.5 * (score + score.transpose(1, 2))
    x[1, :, -4:] = x[1, 0, -4:]  # jet features are the same on every track of a jet
    x[0, :, -4:] = x[0, 0, -4:]
    return x, mask, score


def tagger(seed: int = 3) -> FlavourTagger:
    torch.manual_seed(seed)
    return FlavourTagger(F, width=16, message_layers=2, readout_widths=(16,), **default_optimiser()).eval()


def test_dense_to_graph_connects_every_ordered_pair_within_each_jet():
    x, mask, score = two_jets()
    graph = dense_to_graph(x, mask, score)
    assert graph["x"].shape == (8, F)
    assert graph["edge_index"].shape == (2, 3 * 2 + 5 * 4)
    source, target = graph["edge_index"]
    assert torch.equal(graph["batch"][source], graph["batch"][target])  # never across jets
    assert not (source == target).any()
    # Node 4 is track 1 of jet 1; the edge 3 -> 4 carries score[1, 1, 0].
    edge = ((source == 3) & (target == 4)).nonzero().item()
    assert graph["edge_score"][edge] == score[1, 1, 0]
    assert torch.equal(graph["jet"], x[:, 0, -4:])


def test_tagger_output_does_not_depend_on_the_order_of_tracks():
    x, mask, score = two_jets()
    order = torch.tensor([3, 0, 4, 2, 1])
    permuted_x, permuted_score = x.clone(), score.clone()
    permuted_x[1] = x[1, order]
    permuted_score[1] = score[1][order][:, order]
    model = tagger()
    with torch.no_grad():
        a = model(dense_to_graph(x, mask, score))
        b = model(dense_to_graph(permuted_x, mask, permuted_score))
    assert torch.allclose(a, b, atol=1e-5)


def test_edge_scores_reach_the_message_passing():
    x, mask, score = two_jets()
    model = tagger()
    with torch.no_grad():
        a = model(dense_to_graph(x, mask, score))
        b = model(dense_to_graph(x, mask, 1 - score))
    assert not torch.allclose(a, b, atol=1e-4)


def test_edge_layer_equals_its_formula_on_the_concatenated_edge_inputs():
    """The per-track factorisation of phi_e's first layer is the docstring's formula,
    phi_e([h_i, h_j, sum_jet h, s_ij]) summed edge by edge on both channels."""
    x, mask, score = two_jets()
    graph = dense_to_graph(x, mask, score)
    torch.manual_seed(5)
    width = 8
    conv = EdgeScoreConv(width).eval()
    h = torch.randn(graph["x"].shape[0], width)
    batch, (source, target), s = graph["batch"], graph["edge_index"], graph["edge_score"]
    with torch.no_grad():
        got = conv(h, graph["edge_index"], s, batch, n_jets=2)
        jet_sum = torch.zeros(2, width).index_add_(0, batch, h)[batch]
        same, other = conv.edge(torch.cat([h[target], h[source], jet_sum[target], s[:, None]], -1)).chunk(2, -1)
        messages = torch.zeros(h.shape[0], 2 * width).index_add_(
            0, target, torch.cat([s[:, None] * same, (1 - s[:, None]) * other], -1))
        expected = conv.norm(h + conv.node(torch.cat([h, messages], -1)))
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, conv.norm(h + conv.node(torch.cat([h, 0 * messages], -1))), atol=1e-3)


@pytest.mark.parametrize("threads", [1, 2])
def test_index_sums_are_pyg_scatter_to_the_bit_with_gradients(threads):
    """index_sum / index_mean give PyG's scatter sums and means, forward and backward, to the
    bit (the same additions in the same order), on one thread and on two; an index left
    empty gives 0."""
    from torch_geometric.utils import scatter

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(20_000, 48, generator=g, requires_grad=True)
        index = torch.randint(0, 999, (20_000,), generator=g)  # row 999 stays empty
        weights = torch.randn(1000, 48, generator=g)
        for ours, reduce in ((index_sum, "sum"), (index_mean, "mean")):
            got, expected = ours(x, index, 1000), scatter(x, index, 0, 1000, reduce)
            assert torch.equal(got, expected) and not got[999].any()
            grad, = torch.autograd.grad((got * weights).sum(), x)
            expected_grad, = torch.autograd.grad((expected * weights).sum(), x)
            assert torch.equal(grad, expected_grad)
    finally:
        torch.set_num_threads(previous)


def test_tagger_gradients_are_the_same_bits_every_time_on_two_threads():
    """The same seed gives the same trained tagger at two threads: no accumulation (the
    message and jet sums included) whose order depends on the threads. 300 jets of up to
    15 tracks: tensors large enough for torch to split them over the threads. (With the
    jets' rows gathered by ``[batch]``, whose backward adds atomically over the threads,
    this failed only while the machine was busy.)"""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 15, F, generator=g)
    mask = torch.arange(15) < torch.randint(2, 16, (300, 1), generator=g)
    graph = dense_to_graph(x, mask, torch.rand(300, 15, 15, generator=g))
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = tagger().train()
        gradients = []
        for _ in range(4):
            model.zero_grad()
            model(graph).pow(2).sum().backward()
            gradients.append([p.grad.clone() for p in model.parameters()])
    finally:
        torch.set_num_threads(previous)
    for again in gradients[1:]:
        assert all(torch.equal(a, b) for a, b in zip(gradients[0], again))


def test_flavour_classes():
    assert flavour_classes(np.array([5, 0, 4, 5])).tolist() == [0, 2, 1, 0]
    with pytest.raises(ValueError, match="unknown jet flavour codes \\[3\\]"):
        flavour_classes(np.array([5, 3]))


def test_classification_metrics_match_scikit_learn_on_a_balanced_sample(rng):
    labels = rng.choice(3, size=400, p=[0.5, 0.2, 0.3])
    probabilities = rng.dirichlet([1, 1, 1], size=400)
    probabilities[np.arange(400), labels] += rng.uniform(0, 0.8, 400)  # better than chance
    probabilities /= probabilities.sum(1, keepdims=True)
    predicted = probabilities.argmax(1)
    weights = balance_weights(labels)
    for k in range(3):
        assert weights[labels == k].sum() == pytest.approx(400 / 3)
    metrics = classification_metrics(labels, probabilities)
    recall = recall_score(labels, predicted, average=None)
    assert [metrics["acc_b"], metrics["acc_c"], metrics["acc_light"]] == pytest.approx(recall)
    assert metrics["accuracy"] == pytest.approx(recall.mean())  # balanced accuracy
    assert metrics["f1_macro"] == pytest.approx(f1_score(labels, predicted, average="macro", sample_weight=weights))


def test_a_missing_class_is_left_out_of_the_means():
    labels = np.array([0, 0, 0, 2])
    assert balance_weights(labels).tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])
    probabilities = np.eye(3)[[0, 0, 2, 2]]  # one b jet called light
    metrics = classification_metrics(labels, probabilities)
    assert np.isnan(metrics["acc_c"])
    assert metrics["acc_b"] == pytest.approx(2 / 3) and metrics["acc_light"] == 1.0
    assert metrics["accuracy"] == pytest.approx((2 / 3 + 1) / 2)


def test_bootstrap_spread_is_the_binomial_error_of_the_accuracy(rng):
    n = 3000
    labels = np.repeat([0, 1, 2], n // 3)
    right = rng.random(n) < 0.6
    predicted = np.where(right, labels, (labels + 1) % 3)
    spread = bootstrap_spread(labels, np.eye(3)[predicted], resamples=300, seed=4)
    assert spread["accuracy"] == pytest.approx(np.sqrt(0.6 * 0.4 / n), rel=0.2)


def test_b_discriminant_by_hand():
    p = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    assert b_discriminant(p, 0.0) == pytest.approx([np.log(2.0), np.log(0.125)])
    assert b_discriminant(p, 1.0) == pytest.approx([np.log(2.0), 0.0])


def test_rejection_on_a_hand_made_roc():
    signal = np.array([10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    background = np.array([9.5, 6.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -1.0, -2.0])
    # Cut at 7 keeps 4/10 signal and 1/10 background; at 6: 5/10 and 2/10;
    # at 3: 8/10 and 2/10; at 2: 9/10 and 2/10; at 1: all signal, 2/10 background.
    assert rejection_at(signal, background, [0.4, 0.5, 0.8]) == pytest.approx([10.0, 5.0, 5.0])
    # Between the points the efficiency curve is linear: at 45% signal, 15% background.
    assert rejection_at(signal, background, [0.45]) == pytest.approx([1 / 0.15])
    assert rejection_at(signal, np.array([-5.0, -6.0]), [0.7]) == [float("inf")]
    # The same curve as scikit-learn's ROC.
    fpr, tpr, _ = roc_curve(np.r_[np.ones(10), np.zeros(10)], np.r_[signal, background])
    assert rejection_at(signal, background, [0.6]) == pytest.approx([1 / np.interp(0.6, tpr, fpr)])


def test_partition_scores():
    scores = partition_scores(np.array([[0, 0, 1, -1]]))
    assert scores[0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_edge_files_hold_the_finder_partition(track_graphs, tmp_path):
    config = _config(tmp_path)
    edges = {split: tmp_path / f"baseline_{split}.h5" for split in ("val", "test")}
    counts = score_edges(config, "baseline", {s: track_graphs[s] for s in edges}, edges, run_id="run-1")
    assert counts["val"] == TrackGraphBatches(track_graphs["val"], 8).n_jets
    graphs = FlavourBatches(track_graphs["val"], edges["val"], batch_size=8)
    tracks = TrackGraphBatches(track_graphs["val"], 8)
    mean, std = tracks.feature_mean, tracks.feature_std
    for index in (0, len(graphs) - 1):
        batch = tracks[index]
        expected = partition_scores(classical_partition("baseline", batch["x"].numpy(), batch["mask"].numpy(), mean, std))
        graph = graphs[index]
        source, target = graph["edge_index"].numpy()
        jet = graph["batch"].numpy()
        first = np.r_[0, np.cumsum(batch["n_tracks"].numpy())][jet]
        local_i, local_j = target - first[target], source - first[source]
        assert np.array_equal(graph["edge_score"].numpy(), expected[jet[target], local_i, local_j])
    # Edge scores of another file's jets are refused, naming the file.
    with pytest.raises(DataFileError, match="baseline_test.h5: its jets do not match"):
        FlavourBatches(track_graphs["val"], edges["test"], batch_size=8)


def test_score_edges_needs_a_checkpoint_for_learned_finders(track_graphs, tmp_path):
    with pytest.raises(ValueError, match="'set2graph': needs its checkpoint"):
        score_edges(_config(tmp_path), "set2graph", {"val": track_graphs["val"]}, {"val": tmp_path / "e.h5"})


def test_training_writes_checkpoint_history_and_links_the_finder_run(track_graphs, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipeline.ml.checkpoints import checkpoint_run_id
    from pipeline.ml.tracking import tracking_uri
    from pipeline.studies.flavour_tagging.train import train_flavour_tagger

    config = _config(tmp_path)
    edges = {s: tmp_path / f"avr_{s}.h5" for s in ("train", "val")}
    score_edges(config, "avr", {s: track_graphs[s] for s in edges}, edges, run_id="finder-run")
    graphs = {s: track_graphs[s] for s in ("train", "val")}
    with pytest.raises(ValueError, match="avr: needs the vertex finder's train and val edge files"):
        train_flavour_tagger(config, "avr", graphs, None, tmp_path / "x.ckpt", tmp_path / "x.csv")
    final = train_flavour_tagger(config, "avr", graphs, edges, tmp_path / "avr.ckpt", tmp_path / "avr.csv",
                                 progress=False)
    assert {"val_loss", "val_accuracy"} <= set(final)
    run = MlflowClient(tracking_uri(config["mlflow"])).get_run(checkpoint_run_id(tmp_path / "avr.ckpt"))
    assert run.data.tags["vertex_finder.run_id"] == "finder-run"
    assert run.data.tags["vertex_finder"] == "avr"
    assert "val_accuracy" in run.data.metrics
    # The checkpoint records what it is: the study, the method, the network and the finder whose edges it read.
    from pipeline.ml.checkpoints import IDENTITY_KEY, load_checkpoint
    from pipeline.studies.flavour_tagging.train import tagger_identity

    recorded = load_checkpoint(tmp_path / "avr.ckpt")[IDENTITY_KEY]
    assert recorded == {**tagger_identity(config, "avr"), "vertex_finder_run_id": "finder-run"}
    assert recorded["vertex_finder"] == "avr" and recorded["network"]["width"] == config["flavour_tagging"]["width"]
    with pytest.raises(ValueError, match=r"replica 1: flavour_tagging.seeds is 1, so the replica must be in 0..0"):
        train_flavour_tagger(config, "avr", graphs, edges, tmp_path / "y.ckpt", tmp_path / "y.csv", replica=1)


def test_replica_zero_keeps_the_single_training_seeds_and_replicas_differ():
    from pipeline.seeds import derive_seed
    from pipeline.studies.flavour_tagging.train import replica_seed

    assert replica_seed(7, 0) == derive_seed(7, "flavour_tagging")
    assert replica_seed(7, 0, "batches") == derive_seed(7, "flavour_tagging", "batches")
    assert len({replica_seed(7, r, *s) for r in range(3) for s in ((), ("batches",))}) == 6


def _row(accuracy: float, acc_b: float) -> dict:
    return {"accuracy": accuracy, "f1_macro": accuracy, "acc_b": acc_b, "acc_c": 0.5, "acc_light": 0.8,
            "light_rejection_b70": 100.0, "c_rejection_b70": 6.0, "light_rejection_b77": 50.0,
            "c_rejection_b77": 4.0}


def test_replica_summary_by_hand(tmp_path):
    from pipeline.studies.flavour_tagging.evaluate import replica_summary, write_tables

    replicas = {"no_vertex": [_row(0.60, 0.70), _row(0.64, 0.74)], "avr": [_row(0.63, 0.71), _row(0.65, 0.79)]}
    rows, seed_spread = replica_summary(replicas)
    avr = rows[1]
    assert avr["method"] == "avr" and avr["accuracy"] == pytest.approx(0.64) and avr["acc_b"] == pytest.approx(0.75)
    # Paired by seed: +0.03 and +0.01, whose mean is 0.02 and sample standard deviation 0.01 * sqrt(2).
    assert avr["gain"] == pytest.approx(0.02) and seed_spread["avr"]["gain"] == pytest.approx(0.01 * np.sqrt(2))
    assert seed_spread["no_vertex"]["accuracy"] == pytest.approx(0.02 * np.sqrt(2))
    assert seed_spread["avr"]["acc_c"] == 0 and rows[0]["gain"] == 0
    write_tables(rows, tmp_path, {"no_vertex": {"accuracy": 0.004}}, seed_spread, replicas)
    lines = (tmp_path / "metrics_replicas.csv").read_text().splitlines()
    assert lines[0].startswith("method,replica,accuracy") and lines[4].startswith("avr,1,0.6500,0.6500,0.7900")
    assert "| no_vertex | 0.620 ± 0.004 ± 0.028 |" in (tmp_path / "table.md").read_text()
    assert "| +0.020 ± 0.014 |" in (tmp_path / "table.md").read_text()
    assert "mean of 2 trainings" in (tmp_path / "table.md").read_text()
    _, single = replica_summary({"no_vertex": [_row(0.6, 0.7)]})
    assert single == {}


def test_evaluation_needs_one_checkpoint_per_replica(tmp_path):
    from pipeline.studies.flavour_tagging.evaluate import evaluate_flavour_tagging
    from pipeline.studies.flavour_tagging.methods import METHODS as TAGGER_METHODS

    config = _config(tmp_path)
    config["flavour_tagging"]["seeds"] = 2
    checkpoints = {m: [tmp_path / f"{m}_0.ckpt", tmp_path / f"{m}_1.ckpt"] for m in TAGGER_METHODS}
    checkpoints["rnn"] = checkpoints["rnn"][:1]
    with pytest.raises(ValueError, match=r"seeds is 2, so every method needs 2 checkpoints .*\{'rnn': 1\}"):
        evaluate_flavour_tagging(config, tmp_path / "test.h5", checkpoints, {}, tmp_path)


def _config(tmp_path):
    from pipeline.tiny import tiny_config

    config = tiny_config(events_per_shard=10, shards=1)
    config["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path}/mlflow.db"
    config["training"]["resume_dir"] = str(tmp_path / "resume")
    config["flavour_tagging"].update(width=8, message_layers=1, readout_widths=[8])
    config["flavour_tagging"]["training"] = {"max_epochs": 2, "batch_size": 64}
    return config


def test_mixed_batches_hold_every_jet_once_with_its_own_edges(track_graphs, tmp_path):
    config = _config(tmp_path)
    edges = tmp_path / "baseline_train.h5"
    score_edges(config, "baseline", {"train": track_graphs["train"]}, {"train": edges})
    plain = FlavourBatches(track_graphs["train"], edges, batch_size=64)
    mixed = FlavourBatches(track_graphs["train"], edges, batch_size=64, slices_per_batch=8, seed=1)
    assert len(mixed) == len(plain)

    def by_jet(batches):
        scores = {}
        for index in range(len(batches)):
            graph = batches[index]
            target = graph["edge_index"][1]
            for jet, index_in_file in enumerate(graph["jet_index"].tolist()):
                scores[index_in_file] = sorted(graph["edge_score"][graph["batch"][target] == jet].tolist())
        return scores

    a, b = by_jet(plain), by_jet(mixed)
    assert a == b and len(a) == plain.tracks.n_jets
    # Mixing spreads track counts: the first mixed batch is not a narrow band of them.
    first = mixed[0]["n_tracks"]
    assert first.max() - first.min() > plain[0]["n_tracks"].max() - plain[0]["n_tracks"].min()


def test_batches_read_after_pickling_and_in_worker_processes_are_the_same(track_graphs, tmp_path):
    config = _config(tmp_path)
    edges = tmp_path / "baseline_train.h5"
    score_edges(config, "baseline", {"train": track_graphs["train"]}, {"train": edges})
    batches = FlavourBatches(track_graphs["train"], edges, batch_size=16, slices_per_batch=4, seed=3)
    first = batches[0]  # the files and their datasets are open now: pickling must leave them out
    copy = pickle.loads(pickle.dumps(batches))
    for key, value in copy[0].items():
        assert torch.equal(value, first[key]), key

    def collect(workers):
        data = FlavourDataModule({"val": track_graphs["train"]}, {"val": edges}, batch_size=16, num_workers=workers)
        data.setup()
        return [batch["edge_score"] for batch in data.val_dataloader()]

    single, parallel = collect(0), collect(2)
    assert len(single) == len(parallel) > 1
    assert all(torch.equal(a, b) for a, b in zip(single, parallel))
