"""The particle-flow study's networks on small synthetic events: shapes and ranges, the
loss, the plain-torch kNN graph, edge cases of the graph network, the track ablation,
learning on a fixed batch and the checkpoint round trip."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from default_config import particle_flow_settings, particle_flow_shapes

from pipeline.ml.checkpoints import load_module
from pipeline.ml.layers import NeighbourEdgeConv, knn_neighbours, mlp, to_fine
from pipeline.studies.particle_flow.models import (
    ParticleFlowModule,
    build_network,
    energy_weighted_mse,
    network_settings,
)

FINE = 64
#: The layers of the schema's default detector.
SHAPES = particle_flow_shapes()
#: Small networks: the tests train them for a few hundred steps.
SMALL = {"channels": [8, 16, 32], "width": 32, "n_layers": 2, "k": 6}
#: Cells within this distance [fine cells] of the track are charged (f = 0), the others neutral (f = 1).
CHARGED_RADIUS = 20.0


def small(method: str) -> dict:
    """The settings of a small network of ``method``: the schema's defaults but for SMALL."""
    return particle_flow_settings(method, **SMALL)


def synthetic_batch(n_events: int, seed: int, occupancy: float = 0.04, tracks: bool = True) -> dict:
    """A batch dict of random events: a track at a random pixel away from the edges
    (momentum 5-50 GeV), cells with energy (0.1-5 GeV, 5 % of them slightly negative)
    scattered at random with ``occupancy`` per layer, fraction 0 within CHARGED_RADIUS
    fine cells of the track and 1 further out, weight |E| (0 in empty cells)."""
    rng = np.random.default_rng(seed)
    track = np.zeros((n_events, FINE, FINE), np.float32)
    where = rng.integers(16, FINE - 16, (n_events, 2))
    if tracks:
        track[np.arange(n_events), where[:, 0], where[:, 1]] = rng.uniform(5, 50, n_events)
    layers, fractions, weights = [], [], []
    for h, w in SHAPES:
        filled = rng.random((n_events, h, w)) < max(occupancy, 3 / (h * w))
        energy = np.where(filled, rng.uniform(0.1, 5, (n_events, h, w)), 0.0)
        energy *= np.where(rng.random((n_events, h, w)) < 0.05, -0.05, 1.0)
        # Cell centres on the fine grid, in fine cells.
        eta = (np.arange(h) + 0.5) * FINE / h - 0.5
        phi = (np.arange(w) + 0.5) * FINE / w - 0.5
        distance = np.hypot(eta[None, :, None] - where[:, 0, None, None], phi[None, None, :] - where[:, 1, None, None])
        layers.append(torch.tensor(energy, dtype=torch.float32))
        fractions.append(torch.tensor(distance > CHARGED_RADIUS, dtype=torch.float32))
        weights.append(torch.tensor(np.abs(energy), dtype=torch.float32))
    return {"layers": layers, "track": torch.tensor(track), "fraction": fractions, "weight": weights}


def select(batch: dict, events) -> dict:
    """The batch of some of the events of ``batch``, in the given order."""
    index = torch.as_tensor(events)
    return {key: [x[index] for x in value] if isinstance(value, list) else value[index] for key, value in batch.items()}


@pytest.mark.parametrize("method, settings", [("cnn", {}), ("cnn_no_track", {}), ("graph", {}),
                                              ("graph", {"dynamic": True})])
def test_output_shapes_and_range(method, settings):
    torch.manual_seed(0)
    batch = synthetic_batch(3, seed=1)
    out = build_network(method, SHAPES, particle_flow_settings(method, **settings))(batch["layers"], batch["track"])
    assert [tuple(x.shape) for x in out] == [(3, *shape) for shape in SHAPES]
    for x in out:
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    if method == "graph":
        for x, energy in zip(out, batch["layers"]):
            assert (x[energy == 0] == 0).all() and (x[energy != 0] > 0).all()


def test_other_granularities():
    """The heads follow layer_shapes: two layers at other granularities, a 32-cell fine grid."""
    shapes = [(32, 8), (4, 16)]
    layers = [torch.rand(2, *shape) for shape in shapes]
    track = torch.zeros(2, 32, 32)
    for net in (build_network("cnn", shapes, particle_flow_settings("cnn", fine=32, channels=[4, 8])),
                build_network("graph", shapes, particle_flow_settings("graph", width=8, n_layers=1))):
        assert [tuple(x.shape) for x in net(layers, track)] == [(2, 32, 8), (2, 4, 16)]
    with pytest.raises(ValueError, match="does not divide"):
        build_network("cnn", [(64, 24)], particle_flow_settings("cnn"))
    with pytest.raises(ValueError, match="divisible by 8"):
        build_network("cnn", [(36, 36)], particle_flow_settings("cnn", fine=36, channels=[4, 4, 4, 4]))


def test_to_fine_conserves_energy():
    energy = torch.randn(2, 8, 4)
    fine = to_fine(energy, (8, 16))
    assert fine.shape == (2, 64, 64)
    torch.testing.assert_close(fine.sum(dim=(1, 2)), energy.sum(dim=(1, 2)))
    torch.testing.assert_close(fine[:, 8:16, 16:32], energy[:, 1:2, 1:2].expand(2, 8, 16) / 128)


def test_energy_weighted_mse():
    # Two cells in two layers: w = 1, 3; errors 0.5, 1 -> (1 * 0.25 + 3 * 1) / 4.
    pred = [torch.tensor([[0.5]]), torch.tensor([[0.0, 0.7]])]
    target = [torch.tensor([[1.0]]), torch.tensor([[1.0, 0.0]])]
    weight = [torch.tensor([[1.0]]), torch.tensor([[3.0, 0.0]])]
    assert energy_weighted_mse(pred, target, weight).item() == pytest.approx(3.25 / 4)
    assert energy_weighted_mse(pred[0], target[0], weight[0]).item() == pytest.approx(0.25)
    # No weight at all: 0, and a finite (zero) gradient.
    p = torch.full((2, 3), 0.3, requires_grad=True)
    loss = energy_weighted_mse([p], [torch.ones(2, 3)], [torch.zeros(2, 3)])
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(p.grad).all() and (p.grad == 0).all()
    with pytest.raises(ValueError, match="one of each per layer"):
        energy_weighted_mse(pred, target, weight[:1])


def brute_force_knn(pos: np.ndarray, batch: np.ndarray, k: int) -> dict[int, set[int]]:
    """Each node's k nearest other nodes of its event, one node at a time."""
    neighbours = {}
    for i in range(len(pos)):
        others = np.flatnonzero((batch == batch[i]) & (np.arange(len(pos)) != i))
        distance = np.linalg.norm(pos[others] - pos[i], axis=1)
        neighbours[i] = set(others[np.argsort(distance)[:k]].tolist())
    return neighbours


def test_knn_matches_brute_force():
    rng = np.random.default_rng(3)
    # Events of 0 (event 2), 1, 4 and many nodes, interleaved (batch not sorted).
    sizes = {0: 40, 1: 4, 3: 1, 4: 25, 5: 11}
    batch = rng.permutation(np.concatenate([np.full(n, event) for event, n in sizes.items()]))
    pos = rng.normal(size=(len(batch), 3))
    pos[batch == 4] += 0.01  # overlapping events: only the event index separates them
    k = 10
    neighbours = knn_neighbours(torch.tensor(pos, dtype=torch.float32), torch.tensor(batch), k, n_events=6).numpy()
    assert neighbours.shape == (len(batch), k)
    found = {i: set(row[row >= 0].tolist()) for i, row in enumerate(neighbours)}
    assert found == brute_force_knn(pos, batch, k)
    assert (neighbours >= 0).sum() == sum(n * min(k, n - 1) for n in sizes.values())
    # Nearest first, the missing ones (events of fewer than k + 1 nodes) last.
    i = int(np.flatnonzero(batch == 0)[0])
    distance = np.linalg.norm(pos[neighbours[i]] - pos[i], axis=1)
    assert (np.diff(distance) > 0).all()
    small = neighbours[np.flatnonzero(batch == 1)]
    assert (small[:, :3] >= 0).all() and (small[:, 3:] == -1).all()
    # Nothing to connect: no nodes, or single-node events.
    assert knn_neighbours(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), k, 4).shape == (0, 0)
    assert knn_neighbours(torch.zeros(3, 3), torch.arange(3), k).shape == (3, 0)


def test_knn_ties_go_to_the_lower_index_whatever_the_other_events():
    """On a cell grid distances tie exactly; the chosen neighbours of an event are the
    lowest-indexed of the tied ones, and the same alone and next to a larger event."""
    grid = torch.stack(torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij"), -1).reshape(-1, 2)
    pos = torch.cat([grid, torch.zeros(25, 1)], 1)
    alone = knn_neighbours(pos, torch.zeros(25, dtype=torch.long), 6)
    # The centre cell 12: four neighbours at 1 (7, 11, 13, 17), then four at sqrt(2), of which 6 and 8.
    assert alone[12].tolist() == [7, 11, 13, 17, 6, 8]
    other = torch.rand(60, 3)
    together = knn_neighbours(torch.cat([other, pos]), torch.cat([torch.zeros(60), torch.ones(25)]).long(), 6)
    assert torch.equal(together[60:] - 60, alone)


def test_neighbour_edge_conv_is_pyg_edge_conv_with_max_aggregation():
    """The factorised, dense EdgeConv gives PyG's EdgeConv (aggr="max") on the same edges
    and the same MLP, values and gradients, nodes without neighbours included."""
    from torch_geometric.nn import EdgeConv

    torch.manual_seed(1)
    # Events of 12, 3 and 1 nodes: full, short (-1 padded) and empty neighbour rows.
    batch = torch.cat([torch.zeros(12), torch.ones(3), torch.full((1,), 2)]).long()
    pos, h = torch.randn(16, 3), torch.randn(16, 5, requires_grad=True)
    neighbours = knn_neighbours(pos, batch, 4)
    target, slot = (neighbours >= 0).nonzero(as_tuple=True)
    edges = torch.stack([neighbours[target, slot], target])
    network = mlp([10, 8, 8], final_activation=True)
    ours, theirs = NeighbourEdgeConv(network), EdgeConv(network, aggr="max")
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    a, b = ours(h, neighbours), theirs(h, edges)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert (a[15] == 0).all() and a[:15].abs().sum(1).gt(0).all()
    weights = torch.randn_like(a)
    grad_a = torch.autograd.grad((a * weights).sum(), [h, *network.parameters()])
    grad_b = torch.autograd.grad((b * weights).sum(), [h, *network.parameters()])
    for x, y in zip(grad_a, grad_b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_graph_net_small_and_empty_events():
    torch.manual_seed(0)
    net = build_network("graph", SHAPES, particle_flow_settings("graph", k=10, width=16, n_layers=2))
    batch = synthetic_batch(4, seed=2)
    for energy in batch["layers"]:
        energy[0] = 0  # event 0: no cells
        energy[1] = 0
        energy[3] = 0  # event 3: no cells and no track
    batch["layers"][0][1, 3, 4] = 1.0  # event 1: three cells and the track, fewer than k + 1 nodes
    batch["layers"][3][1, 2, 2] = 0.5
    batch["layers"][5][1, 7, 0] = -0.1
    batch["track"][3] = 0
    out = net(batch["layers"], batch["track"])
    for x in out:
        assert torch.isfinite(x).all() and (x[[0, 3]] == 0).all()
    assert out[0][1, 3, 4] > 0 and out[3][1, 2, 2] > 0 and out[5][1, 7, 0] > 0
    assert sum(int((x[1] > 0).sum()) for x in out) == 3
    loss = energy_weighted_mse(out, batch["fraction"], batch["weight"])
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    # A batch without a single node.
    empty = [torch.zeros(2, *shape) for shape in SHAPES]
    out = net(empty, torch.zeros(2, FINE, FINE))
    assert all((x == 0).all() for x in out)
    # One node per event (the track only): no edges, still a prediction for nothing but the track.
    net(empty, batch["track"][[1, 2]])


def test_track_ablation():
    torch.manual_seed(0)
    batch = synthetic_batch(2, seed=4)
    moved = torch.roll(batch["track"], shifts=(7, -5), dims=(1, 2))
    for method, depends in (("cnn", True), ("cnn_no_track", False), ("graph", True)):
        net = build_network(method, SHAPES, small(method))
        a, b = net(batch["layers"], batch["track"]), net(batch["layers"], moved)
        c = net(batch["layers"], torch.zeros_like(moved))
        differ = [not torch.equal(x, y) for x, y in zip(a, b)] + [not torch.equal(x, y) for x, y in zip(a, c)]
        assert all(differ) if depends else not any(differ), method


def test_graph_net_events_are_isolated():
    """An event's fractions are the same alone, in a batch, and with the batch permuted."""
    torch.manual_seed(0)
    batch = synthetic_batch(5, seed=5)
    net = build_network("graph", SHAPES, particle_flow_settings("graph", width=16, n_layers=3, k=10))
    full = net(batch["layers"], batch["track"])
    alone = net(*(lambda b: (b["layers"], b["track"]))(select(batch, [2])))
    permutation = [4, 2, 0, 3, 1]
    permuted = net(*(lambda b: (b["layers"], b["track"]))(select(batch, permutation)))
    for x, y, z in zip(full, alone, permuted):
        torch.testing.assert_close(x[2:3], y, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(x[permutation], z, atol=1e-6, rtol=1e-5)
    # Changing another event leaves event 2 untouched.
    changed = select(batch, [0, 1, 2, 3, 4])
    changed["layers"][1][0] *= 3
    changed["track"][4] = 0
    for x, y in zip(full, net(changed["layers"], changed["track"])):
        torch.testing.assert_close(x[2], y[2], atol=1e-6, rtol=1e-5)


def test_graph_net_gradients_are_the_same_bits_every_time_on_two_threads():
    """The same seed gives the same trained network: no accumulation whose order depends on
    the threads (advanced indexing's backward, index_put_ with accumulate, was one)."""
    batch = synthetic_batch(32, seed=3, occupancy=0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        net = build_network("graph", SHAPES, particle_flow_settings("graph"))
        gradients = []
        for _ in range(4):
            net.zero_grad()
            sum(o.pow(2).mean() for o in net(batch["layers"], batch["track"])).backward()
            gradients.append([p.grad.clone() for p in net.parameters()])
    finally:
        torch.set_num_threads(threads)
    for again in gradients[1:]:
        assert all(torch.equal(a, b) for a, b in zip(gradients[0], again))


def best_constant_loss(batch: dict) -> float:
    """The loss of the best constant fraction (the weighted mean): what a network that
    ignores where the cells are relative to the track can reach at most."""
    w = torch.cat([x.flatten() for x in batch["weight"]])
    f = torch.cat([x.flatten() for x in batch["fraction"]])
    mean = (w * f).sum() / w.sum()
    return float((w * (f - mean) ** 2).sum() / w.sum())


@pytest.mark.parametrize("method, steps", [("cnn", 150), ("graph", 200)])
def test_networks_learn_the_track_neighbourhood(method, steps):
    torch.manual_seed(0)
    batch = synthetic_batch(4, seed=6)
    net = build_network(method, SHAPES, small(method))
    optimiser = torch.optim.Adam(net.parameters(), lr=5e-3)
    baseline = best_constant_loss(batch)
    first = None
    for _ in range(steps):
        optimiser.zero_grad()
        loss = energy_weighted_mse(net(batch["layers"], batch["track"]), batch["fraction"], batch["weight"])
        loss.backward()
        optimiser.step()
        first = loss.item() if first is None else first
    assert 0.1 < baseline < first
    # Well below the best constant: the network learnt where the track is.
    assert loss.item() < 0.4 * baseline, (first, baseline, loss.item())


def test_network_settings():
    """A method's own settings out of a section that may hold the other network's too, all
    of them required: no defaults but the schema's."""
    cnn, graph = particle_flow_settings("cnn"), particle_flow_settings("graph")
    assert network_settings("cnn", {**graph, **cnn}) == {key: cnn[key] for key in ("fine", "channels", "energy_scale")}
    assert network_settings("graph", {**graph, "k": 4, "channels": [4]})["k"] == 4
    with pytest.raises(ValueError, match="unknown particle-flow network settings"):
        network_settings("cnn", {**cnn, "widht": 3})
    with pytest.raises(ValueError, match=r"missing \['k'\]"):
        network_settings("graph", {key: value for key, value in graph.items() if key != "k"})
    with pytest.raises(ValueError, match="unknown particle-flow method"):
        build_network("mlp", SHAPES, cnn)
    assert not build_network("cnn_no_track", SHAPES, cnn).use_track and build_network("cnn", SHAPES, cnn).use_track


@pytest.mark.parametrize("method", ["cnn", "graph"])
def test_checkpoint_round_trip(method, tmp_path):
    torch.manual_seed(0)
    events = synthetic_batch(6, seed=7)
    rows = [select(events, [i]) for i in range(6)]
    rows = [{key: [x[0] for x in v] if isinstance(v, list) else v[0] for key, v in row.items()} for row in rows]
    loader = torch.utils.data.DataLoader(rows, batch_size=3)
    module = ParticleFlowModule(method, SHAPES, small(method), learning_rate=1e-2, lr_schedule="constant")
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader, loader)
    assert {"train_loss", "val_loss"} <= set(trainer.callback_metrics)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = load_module(ParticleFlowModule, path)  # weights-only: plain hyperparameters
    assert restored.hparams.method == method and restored.hparams.settings == network_settings(method, small(method))
    module.eval()
    restored.eval()
    batch = select(events, [0, 1, 2])
    with torch.no_grad():
        for x, y in zip(module.fractions(batch), restored.fractions(batch)):
            torch.testing.assert_close(x, y)
    predicted = trainer.predict(restored, loader)
    assert [tuple(x.shape) for x in predicted[0]] == [(3, *shape) for shape in SHAPES]
