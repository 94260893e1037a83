"""Vertex finding: the paper's metrics, the partition step, classical finders, data, networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from default_config import vertex_finder_training
from sklearn.metrics import adjusted_rand_score

from pipeline.ml.layers import input_blocks
from pipeline.partition import partition_dense
from pipeline.simulation.tracker import perigee
from pipeline.studies.vertexing.classical import avr_partition, baseline_partition
from pipeline.studies.vertexing.data import TrackGraphBatches, TrackGraphDataModule, pad_tracks
from pipeline.studies.vertexing.metrics import bell_ratios, jet_metrics
from pipeline.studies.vertexing.models import (
    DeepSetLayer,
    EdgeClassifier,
    VertexFinder,
    masked_mean,
    pair_targets,
    vertex_finding_loss,
)

NETWORK = {"set_widths": [32, 32, 5], "edge_widths": [32], "pair_widths": [32], "rnn_hidden": 16, "rnn_layers": 2}


def one_jet(truth, prediction):
    return jet_metrics(np.array(truth), np.array(prediction), np.array([0, len(truth)]))


@pytest.mark.parametrize(
    "truth, prediction, ri, f1, ari_one_sided",
    [  # worked by hand from the metrics' definitions (Shlomi et al., EPJC 81 (2021) 540)
        ([0, 0], [0, 0], 1.0, 1.0, 1.0),
        ([0, 1], [0, 1], 1.0, 0.0, 1.0),
        ([0, 0], [0, 1], 0.0, 0.0, -1.0),
        ([0, 0, 1], [0, 0, 0], 1 / 3, 0.5, -0.4286),
    ],
)
def test_metrics_reproduce_the_worked_cases(truth, prediction, ri, f1, ari_one_sided):
    m = one_jet(truth, prediction)
    assert m["ri"][0] == pytest.approx(ri, abs=1e-4)
    assert m["f1"][0] == pytest.approx(f1, abs=1e-4)
    assert m["ari_one_sided"][0] == pytest.approx(ari_one_sided, abs=1e-4)
    assert m["ari"][0] == pytest.approx(adjusted_rand_score(truth, prediction))


def test_precision_recall_by_hand():
    # truth {0,1,2}{3}; prediction {0,1}{2,3}: TP = 1 (0-1), FP = 1 (2-3), FN = 2 (0-2, 1-2)
    m = one_jet([0, 0, 0, 1], [0, 0, 1, 1])
    assert m["precision"][0] == pytest.approx(0.5)
    assert m["recall"][0] == pytest.approx(1 / 3)
    assert m["f1"][0] == pytest.approx(0.4)
    assert m["ri"][0] == pytest.approx(3 / 6)  # agree on 0-1, 0-3, 1-3


def test_standard_ari_matches_scikit_learn_on_random_jets():
    rng = np.random.default_rng(5)
    sizes = rng.integers(0, 16, 400)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    truth = rng.integers(0, 4, offsets[-1])
    prediction = rng.integers(0, 3, offsets[-1])
    m = jet_metrics(truth, prediction, offsets)
    assert np.array_equal(m["scored"], sizes >= 2)
    for k in np.flatnonzero(sizes >= 2):
        a, b = offsets[k], offsets[k + 1]
        assert m["ari"][k] == pytest.approx(adjusted_rand_score(truth[a:b], prediction[a:b]), abs=1e-12)


def test_bell_ratios():
    bell = [1, 1, 2, 5, 15, 52, 203]
    r = bell_ratios(6)
    for n in range(2, 7):
        assert r[n] == pytest.approx(bell[n - 1] / bell[n])


def test_partition_dense_is_connected_components_in_order_of_appearance():
    adjacency = np.zeros((2, 5, 5), bool)
    adjacency[0, 1, 3] = adjacency[0, 3, 4] = True  # 1-3-4 chained
    adjacency[1, 0, 2] = True
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    assert partition_dense(adjacency, mask).tolist() == [[0, 1, 2, 1, 1], [0, 1, 0, -1, -1]]


def test_partition_dense_relabels_a_labelling_in_order_of_appearance():
    labels = np.array([[3, 3, 7, 1, -1]])
    mask = np.array([[1, 1, 1, 1, 0]], bool)
    same = labels[:, :, None] == labels[:, None, :]
    assert partition_dense(same, mask).tolist() == [[0, 0, 1, 2, -1]]


def _jet_from_vertices(vertices, tracks_per_vertex, rng):
    """Padded raw tracks (1 jet) from true vertices (mm), with small resolutions."""
    d0, z0, phi, cot, truth = [], [], [], [], []
    for label, (position, n) in enumerate(zip(vertices, tracks_per_vertex)):
        for _ in range(n):
            direction = np.array([1.0, 0.4, 0.3]) + rng.normal(0, 0.5, 3)
            p = 20.0 * direction / np.linalg.norm(direction)
            t = perigee(*position, *p, 1, 2.0)
            d0.append(t[0]), z0.append(t[1]), phi.append(t[2]), cot.append(1 / np.tan(t[3])), truth.append(label)
    tracks = {"d0": np.array([d0]), "z0": np.array([z0]), "phi": np.array([phi]), "cot_theta": np.array([cot]),
              "sigma_d0": np.full((1, len(d0)), 0.012), "sigma_z0": np.full((1, len(d0)), 0.05)}
    return tracks, np.ones((1, len(d0)), bool), np.array(truth)


def test_avr_and_baseline_separate_a_displaced_vertex():
    rng = np.random.default_rng(3)
    tracks, mask, truth = _jet_from_vertices([(0.0, 0.0, 0.0), (3.0, 1.2, 0.9)], [4, 3], rng)
    avr = avr_partition(tracks, mask)[0]
    assert jet_metrics(truth, avr, np.array([0, 7]))["f1"][0] == pytest.approx(1.0)
    baseline = baseline_partition(tracks, mask)[0]
    assert baseline.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_avr_finds_two_displaced_vertices():
    rng = np.random.default_rng(4)
    vertices = [(0.0, 0.0, 0.0), (4.0, 1.5, 1.2), (8.0, 3.5, 2.5)]
    tracks, mask, truth = _jet_from_vertices(vertices, [3, 3, 3], rng)
    avr = avr_partition(tracks, mask)[0]
    assert jet_metrics(truth, avr, np.array([0, 9]))["ari"][0] == pytest.approx(1.0)
    # The baseline cannot split the two secondary vertices.
    assert baseline_partition(tracks, mask)[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1]


def test_pad_tracks():
    features = np.arange(10, dtype=np.float32).reshape(5, 2)
    batch = pad_tracks(features, np.array([0, 1, 0, 0, 0]), np.array([0, 2, 5]))
    assert batch["x"].shape == (2, 3, 2)
    assert batch["mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["vertex"].tolist() == [[0, 1, -1], [0, 0, 0]]
    assert batch["x"][1, 2].tolist() == [8.0, 9.0]


@pytest.mark.parametrize("method", ["set2graph", "track_pair", "rnn"])
def test_edge_scores_are_symmetric(method):
    torch.manual_seed(0)
    model = VertexFinder(method, 6, NETWORK, **vertex_finder_training())
    x = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    logits = model(x, mask)
    assert logits.shape == (3, 5, 5)
    assert torch.allclose(logits, logits.transpose(1, 2))


@pytest.mark.parametrize("method", ["set2graph", "track_pair"])
def test_set_models_are_permutation_equivariant(method):
    torch.manual_seed(1)
    model = VertexFinder(method, 6, NETWORK, **vertex_finder_training()).eval()
    x = torch.randn(1, 6, 6)
    mask = torch.ones(1, 6, dtype=torch.bool)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    logits = model(x, mask)
    permuted = model(x[:, perm], mask)
    assert torch.allclose(permuted, logits[:, perm][:, :, perm], atol=1e-5)


def test_padding_does_not_change_the_scores_of_real_tracks():
    torch.manual_seed(2)
    model = VertexFinder("set2graph", 6, NETWORK, **vertex_finder_training()).eval()
    x = torch.randn(1, 4, 6)
    padded = torch.cat([x, torch.randn(1, 3, 6)], dim=1)
    small = model(x, torch.ones(1, 4, dtype=torch.bool))
    large = model(padded, torch.tensor([[1, 1, 1, 1, 0, 0, 0]], dtype=torch.bool))
    assert torch.allclose(small, large[:, :4, :4], atol=1e-5)


@pytest.mark.parametrize("with_set_sum", [False, True])
def test_edge_classifier_is_the_mlp_of_the_concatenated_pairs(with_set_sum):
    """The per-track first layer gives the MLP of [u_i, u_j(, mean_k u_k)] on every pair,
    symmetrised, and the same gradients."""
    torch.manual_seed(4)
    u = torch.randn(3, 6, 5, requires_grad=True)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], dtype=torch.bool)
    edges = EdgeClassifier(5, (16, 8), with_set_sum=with_set_sum)
    b, n, d = u.shape
    parts = [u.unsqueeze(2).expand(b, n, n, d), u.unsqueeze(1).expand(b, n, n, d)]
    if with_set_sum:
        parts.append(masked_mean(u, mask)[:, None].expand(b, n, n, d))
    concatenated = edges.mlp(torch.cat(parts, dim=-1)).squeeze(-1)
    expected = 0.5 * (concatenated + concatenated.transpose(1, 2))
    got = edges(u, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(got)
    parameters = [u, *edges.parameters()]
    for a, c in zip(torch.autograd.grad((got * weights).sum(), parameters),
                    torch.autograd.grad((expected * weights).sum(), parameters)):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("width_in, width_out", [(6, 16), (16, 16), (16, 5)])
def test_deep_set_layer_is_its_formula_with_four_separate_maps(width_in, width_out):
    """The stacked matmul (W_set before or after the attention average) is
    LN(own(x) + set(softmax(q k^T / sqrt(d)) x)) with the four Linear layers applied one by one,
    padding, an empty jet and the gradients included (float64: only the summation order differs)."""
    torch.manual_seed(7)
    layer = DeepSetLayer(width_in, width_out, attention_width=4).double()
    x = torch.randn(3, 5, width_in, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1] * 5, [1] * 2 + [0] * 3, [0] * 5], dtype=torch.bool)
    q, k = layer.query(x), layer.key(x)
    score = (q @ k.transpose(1, 2) / 2.0).masked_fill(~mask.unsqueeze(1), float("-inf"))
    expected = layer.norm(layer.own(x) + layer.set(torch.softmax(score, dim=-1).nan_to_num(0.0) @ x))
    got = layer(x, mask)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(got)
    parameters = [x, *layer.parameters()]
    for a, c in zip(torch.autograd.grad((got * weights).sum(), parameters),
                    torch.autograd.grad((expected * weights).sum(), parameters)):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)


def test_input_blocks_split_a_layer_over_concatenated_parts():
    torch.manual_seed(0)
    layer = torch.nn.Linear(7, 4)
    a, b = torch.randn(3, 5), torch.randn(3, 2)
    w_a, w_b = input_blocks(layer, [5, 2])
    torch.testing.assert_close(layer(torch.cat([a, b], 1)), a @ w_a.t() + b @ w_b.t() + layer.bias)
    with pytest.raises(ValueError, match=r"widths \[5, 3\] sum to 8, expected the layer's 7 inputs"):
        input_blocks(layer, [5, 3])


def test_loss_rewards_the_right_partition():
    vertex = torch.tensor([[0, 0, 1, -1]])
    mask = vertex >= 0
    target, pairs = pair_targets(vertex, mask)
    assert pairs.sum() == 6  # 3 tracks, ordered pairs without the diagonal
    good = torch.where(target > 0, 5.0, -5.0)
    bad = -good
    assert vertex_finding_loss(good, target, pairs) < vertex_finding_loss(bad, target, pairs)
    assert vertex_finding_loss(good, target, pairs) < -0.9  # BCE ~ 0, soft F1 ~ 1


def test_loss_soft_f1_is_a_mean_over_jets():
    """A 2-track jet and a 6-track jet, both perfectly predicted except the large one
    half wrong: the soft F1 term weighs the jets equally, not by their pair counts."""
    vertex = torch.tensor([[0, 0, -1, -1, -1, -1], [0, 0, 0, 1, 1, 1]])
    target, pairs = pair_targets(vertex, vertex >= 0)
    sure = torch.where(target > 0, 30.0, -30.0)
    logits = sure.clone()
    logits[1] = 30.0  # the large jet: everything merged, precision 12 / 30
    loss = vertex_finding_loss(logits, target, pairs)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=pairs.float(), reduction="sum") / pairs.sum()
    f1_large = 2 * 12 / (2 * 12 + 18)
    assert loss.item() == pytest.approx(bce.item() - (1.0 + f1_large) / 2, abs=1e-5)


def test_track_graph_files_and_batches(track_graphs):
    train = TrackGraphBatches(track_graphs["train"], batch_size=16)
    seen = 0
    for index in range(len(train)):
        batch = train[index]
        n = batch["n_tracks"]
        assert (n >= 2).all() and (n <= 15).all()
        assert (batch["mask"].sum(1) == n).all()
        seen += len(n)
    assert seen == train.n_jets
    # Standardised on the training split: mean 0, width 1 per feature.
    import h5py

    with h5py.File(track_graphs["train"], "r") as f:
        x = f["tracks"]["features"][:]
        n_tracks = f["jets"]["n_tracks"][:]
        mean, std = f.attrs["feature_mean"], f.attrs["feature_std"]
    assert np.array_equal(train.feature_mean, mean) and np.array_equal(train.feature_std, std)
    assert np.allclose(x.mean(0), 0, atol=1e-3)
    assert np.allclose(x.std(0)[x.std(0) > 0], 1, atol=1e-3)
    assert np.all(np.diff(n_tracks) >= 0)  # ordered by track count (one chunk here)


def test_worker_processes_read_the_same_batches(track_graphs):
    def collect(workers):
        data = TrackGraphDataModule({"val": track_graphs["val"]}, batch_size=8, num_workers=workers)
        data.setup()
        return [b["x"] for b in data.val_dataloader()]

    single, parallel = collect(0), collect(2)
    assert len(single) == len(parallel)
    assert all(torch.equal(a, b) for a, b in zip(single, parallel))
