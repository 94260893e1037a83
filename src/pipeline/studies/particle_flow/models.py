"""The learned models of the computer-vision particle flow (Di Bello et al., EPJC 81 (2021) 107).

Per event the calorimeter gives six layer images E_l (B, h_l, w_l) [GeV] over one (eta,
phi) window (3 EM then 3 HAD, axis 0 eta, axis 1 phi, ``layer_shapes``; noisy, so cells
can be slightly negative; 0 outside topo-clusters) and a track image T (B, 64, 64): zero
but for the pixel of the charged pion's track, which holds its momentum p [GeV]. Every
network maps ``forward(layers, track)`` to six images (B, h_l, w_l) of the neutral energy
fraction f = E_neutral / E_total in [0, 1] (sigmoid outputs), at each layer's own
granularity, and is trained on the energy-weighted squared error

    L = sum_{l, cells} w (f_pred - f)^2 / sum_{l, cells} w,   w = true cell energy (0 off clusters)

(``energy_weighted_mse``), so a cell counts by the energy whose split it decides.

Energies enter every network through the signed log a(E) = asinh(E / energy_scale):
linear through zero (noise cells of either sign stay small and symmetric), logarithmic
above (cells of 0.05 to 100 GeV map to about 2 to 10), so inputs are O(1) over four
orders of magnitude. energy_scale = 0.01 GeV, near the per-cell noise.

``FractionUNet`` (methods ``cnn`` and ``cnn_no_track``; the paper's UNet)
    Each layer is brought to the fine 64 x 64 grid by nearest-neighbour repetition of its
    cell energy divided by the number of fine cells the cell covers (``to_fine``): the
    fine image sums to the layer's energy, so a coarse HAD cell does not look 64 times
    brighter than the EM cells above it, and each fine cell carries the energy density.
    a(.) of the six fine images, plus a(T) as a seventh channel (``use_track``; the
    ablation ``cnn_no_track`` has six channels and ignores T), go through a UNet:

        encoder  per depth d: [3x3 conv, group norm, leaky ReLU] x 2 to channels[d], 2x2 max-pool
                 between depths
                 (64 -> 32 -> 16 for three depths)
        decoder  per depth, coarse to fine: 2x2 transposed conv (stride 2) to channels[d],
                 concatenated with the encoder's map at d (skip), [3x3 conv, group norm, leaky ReLU] x 2
        heads    per layer l: conv with kernel = stride = the block (64 / h_l, 64 / w_l)
                 (e.g. (1, 2) for 64 x 32, (8, 8) for 8 x 8), leaky ReLU, 1x1 conv, sigmoid

    The strided head integrates exactly the fine cells of each detector cell, the
    inverse of ``to_fine``. The receptive field (~40 fine cells, half the window) covers
    the track and the showers around it.

``FractionGraphNet`` (method ``graph``; a DGCNN, Wang et al., ACM TOG 38 (2019) 146)
    Nodes: every cell with E != 0, all layers of an event together, with features
    [eta, phi (window-relative cell centre / (max(window) / 2), in [-1, 1]), depth l / 5,
    a(E), layer one-hot (6), track flag = 0]; with ``use_track`` one more node per event
    with a track at the track pixel's centre: [eta, phi, 0, a(p), zeros (6), 1] (11 features).
    Graph: each node's k nearest other nodes of its own event in (eta, phi, depth_step * l)
    (the track node at l = 0), built in plain torch (``knn_neighbours``: events padded to
    (B, N_max, 3), torch.cdist with +inf for padding and self, a partial selection: ties,
    which are exact on a cell grid, go to the lower node index, so the graph of an event
    depends on that event alone; fewer than k neighbours where the event has fewer than
    k + 1 nodes). The convolutions are ``NeighbourEdgeConv``s on that (N, k) table.
    Static in space (default): the split of a cell's energy is decided by the showers that
    overlap it, which are its spatial neighbours, and the long-range context (where the
    track is, how much energy it explains) comes from the DGCNN's global event feature
    below, at one kNN per batch instead of one per layer; ``dynamic`` rebuilds the graph
    in feature space before every EdgeConv after the first, as in the original DGCNN.

        h_1 = EdgeConv(x),  h_{m+1} = EdgeConv(h_m),  m < n_layers:
              h_i <- max_{j in kNN(i)} MLP([h_i, h_j - h_i])     (MLP 2 d -> width -> width, ReLU)
        local  = [h_1, ..., h_n]                                  (n_layers * width)
        global = max over the event's nodes of MLP(local)         (width; DGCNN's segmentation head)
        f_i    = sigmoid(MLP([local_i, global, x_i]))             (-> width -> 1)

    Cell predictions are scattered back into the six images; cells without energy get 0.

``ParticleFlowModule`` wraps either network (``build_network``) for training: loss
``energy_weighted_mse``, Adam through ``pipeline.ml.trainer.adam_with_schedule``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn
from torch_geometric.utils import scatter

from pipeline.ml.module import StudyModule
from pipeline.studies.particle_flow.methods import LEARNED
from pipeline.studies.vertexing.models import input_blocks, mlp

#: Granularity (n_eta, n_phi) of the six layers, 3 EM then 3 HAD.
DEFAULT_LAYER_SHAPES = ((64, 32), (64, 64), (32, 32), (16, 16), (16, 16), (8, 8))
#: The learned methods of the study (``methods.LEARNED``): the UNet with and without the
#: track image, the graph network.
METHODS = LEARNED
#: Settings of FractionUNet and their defaults (the ``settings`` of ``build_network``).
CNN_SETTINGS = {"fine": 64, "channels": (16, 32, 64), "energy_scale": 0.01}
#: Settings of FractionGraphNet and their defaults.
GRAPH_SETTINGS = {"window": (0.8, 0.8), "k": 10, "width": 64, "n_layers": 3, "depth_step": 0.05,
                  "dynamic": False, "energy_scale": 0.01}

Images = Sequence[torch.Tensor]


def energy_weighted_mse(pred: Images | torch.Tensor, target: Images | torch.Tensor,
                        weight: Images | torch.Tensor) -> torch.Tensor:
    """sum_{layers, cells} w (f_pred - f)^2 / sum w, a scalar; 0 (not NaN) when sum w = 0.

    Each argument is a list of per-layer tensors of matching shapes (or one tensor).
    """
    if isinstance(pred, torch.Tensor):
        pred, target, weight = [pred], [target], [weight]
    if not len(pred) == len(target) == len(weight):
        raise ValueError(f"energy_weighted_mse: {len(pred)} predictions, {len(target)} targets, "
                         f"{len(weight)} weights; expected one of each per layer")
    numerator = sum((w * (p - t).pow(2)).sum() for p, t, w in zip(pred, target, weight))
    denominator = sum(w.sum() for w in weight)
    # Where every weight is 0 the numerator is exactly 0 too: divide by 1 instead of 0.
    return numerator / torch.where(denominator > 0, denominator, torch.ones_like(denominator))


def signed_log(energy: torch.Tensor, scale: float) -> torch.Tensor:
    """asinh(E / scale): E / scale near 0, sign(E) log(2 |E| / scale) for |E| >> scale."""
    return torch.asinh(energy / scale)


def block_sizes(layer_shapes: Sequence[Sequence[int]], fine: int) -> list[tuple[int, int]]:
    """(fine / h_l, fine / w_l) fine cells per detector cell of each layer; ValueError if a
    layer does not divide the fine grid."""
    blocks = []
    for l, (h, w) in enumerate(layer_shapes):
        if h < 1 or w < 1 or fine % h or fine % w:
            raise ValueError(f"layer {l}: granularity {h} x {w} does not divide the fine {fine} x {fine} grid")
        blocks.append((fine // h, fine // w))
    return blocks


def to_fine(energy: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """A layer image (B, h, w) on the fine grid (B, h * block[0], w * block[1]): every
    cell's energy repeated over its block of fine cells and divided by their number, so
    the fine image has the layer's total energy."""
    bh, bw = block
    return energy.repeat_interleave(bh, dim=1).repeat_interleave(bw, dim=2) / (bh * bw)


#: The UNet's activation, after a group normalisation (``_norm``). Without the normalisation
#: the track-less UNet of the default run saturated in its first epoch, with plain and with
#: leaky ReLUs alike (every output at one fraction, the validation loss frozen at 0.070 and
#: 0.080, against 0.017 with the track); normalised, it learns (0.032 after two epochs on
#: 700 events).
_ACTIVATION = nn.LeakyReLU


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), _norm(c_out), _ACTIVATION(0.01),
                         nn.Conv2d(c_out, c_out, 3, padding=1), _norm(c_out), _ACTIVATION(0.01))


def _norm(channels: int) -> nn.GroupNorm:
    """Group normalisation (Wu and He, ECCV 2018): per event, so training and evaluation agree
    whatever the batch size."""
    return nn.GroupNorm(min(4, channels), channels)


class FractionUNet(nn.Module):
    """The UNet of the module docstring: six layer images (and the track) on the fine grid,
    encoder-decoder with skip connections, one strided head per layer back to its cells.

    ``channels``: the encoder's channels per depth (len(channels) - 1 poolings, so ``fine``
    must be divisible by 2^(len(channels) - 1)); ``use_track``: the track image as a
    seventh input channel (False: ignored).
    """

    def __init__(self, layer_shapes: Sequence[Sequence[int]] = DEFAULT_LAYER_SHAPES, fine: int = 64,
                 channels: Sequence[int] = (16, 32, 64), use_track: bool = True, energy_scale: float = 0.01):
        super().__init__()
        if not channels:
            raise ValueError("FractionUNet: channels must name at least one depth")
        if fine % 2 ** (len(channels) - 1):
            raise ValueError(f"FractionUNet: {len(channels) - 1} 2x2 poolings need a fine grid divisible by "
                             f"{2 ** (len(channels) - 1)}, got {fine}")
        self.layer_shapes = [tuple(int(n) for n in shape) for shape in layer_shapes]
        self.blocks = block_sizes(self.layer_shapes, fine)
        self.fine, self.use_track, self.energy_scale = fine, use_track, energy_scale
        channels = [int(c) for c in channels]
        in_channels = len(self.layer_shapes) + int(use_track)
        self.encoder = nn.ModuleList(_double_conv(c_in, c_out) for c_in, c_out in zip([in_channels, *channels[:-1]],
                                                                                         channels))
        self.pool = nn.MaxPool2d(2)
        depths = range(len(channels) - 2, -1, -1)
        self.up = nn.ModuleList(nn.ConvTranspose2d(channels[d + 1], channels[d], 2, stride=2) for d in depths)
        self.decoder = nn.ModuleList(_double_conv(2 * channels[d], channels[d]) for d in depths)
        c = channels[0]
        self.heads = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, block, stride=block), _ACTIVATION(0.01),
                                                 nn.Conv2d(c, 1, 1))
                                   for block in self.blocks)

    def inputs(self, layers: Images, track: torch.Tensor) -> torch.Tensor:
        """The network's input (B, 6 [+ 1], fine, fine): a(E) of each layer on the fine grid, a(T)."""
        if len(layers) != len(self.layer_shapes):
            raise ValueError(f"FractionUNet: {len(layers)} layer images, expected {len(self.layer_shapes)}")
        images = [to_fine(e, block) for e, block in zip(layers, self.blocks)]
        if self.use_track:
            images.append(track)
        dtype = self.heads[0][0].weight.dtype
        return signed_log(torch.stack(images, dim=1).to(dtype), self.energy_scale)

    def forward(self, layers: Images, track: torch.Tensor) -> list[torch.Tensor]:
        """Neutral fractions, one (B, h_l, w_l) image per layer, in [0, 1]."""
        x = self.inputs(layers, track)
        skips = []
        for k, block in enumerate(self.encoder):
            x = block(self.pool(x) if k else x)
            skips.append(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([up(x), skip], dim=1))
        return [torch.sigmoid(head(x)).squeeze(1) for head in self.heads]


#: The bit pattern of float32 +inf read as an int32: distances of padding and self.
_FLOAT32_INFINITY_BITS = 0x7F800000


@torch.no_grad()
def knn_neighbours(pos: torch.Tensor, batch: torch.Tensor, k: int, n_events: int | None = None) -> torch.Tensor:
    """Each node's k nearest other nodes of the same event: (N, k') node indices, nearest
    first, k' = min(k, largest event's size - 1), -1 where the node's event has fewer than
    k' other nodes; ``pos`` (N, D), ``batch`` (N,) event of each node (need not be sorted).

    Plain torch: events are padded to (n_events, N_max, D), distances by torch.cdist
    (the exact pairwise formula, not the matrix-product one: each distance depends on its
    pair alone), +inf for padding and self. Ties, exact on a cell grid, go to the lower
    node slot, so an event's graph never depends on the other events: the selection runs
    on the integer key (bits of the float32 distance) * 2^b + slot, whose order is the
    distance's (the bit pattern of a non-negative float is monotonic in its value) with
    ties broken by slot, and whose k' smallest ``torch.topk`` finds without sorting the
    N_max columns (a full stable sort was 16% of a training step of the default network).
    """
    n, device = len(pos), pos.device
    n_events = (int(batch.max()) + 1 if n else 0) if n_events is None else n_events
    counts = torch.bincount(batch, minlength=n_events) if n else torch.zeros(n_events, dtype=torch.long)
    n_max = int(counts.max()) if n else 0
    kk = min(int(k), n_max - 1)
    if kk <= 0:
        return torch.empty(n, 0, dtype=torch.long, device=device)
    order = torch.argsort(batch, stable=True)
    event = batch[order]
    slot = torch.arange(n, device=device) - (torch.cumsum(counts, 0) - counts)[event]
    padded = pos.new_zeros(n_events, n_max, pos.shape[1], dtype=torch.float32)
    padded[event, slot] = pos[order].to(torch.float32)
    node = torch.full((n_events, n_max), -1, dtype=torch.long, device=device)
    node[event, slot] = order
    distance = torch.cdist(padded, padded, compute_mode="donot_use_mm_for_euclid_dist")
    distance.masked_fill_(node[:, None, :] < 0, float("inf"))
    distance.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    bits = max(int(n_max - 1).bit_length(), 1)
    key = distance.view(torch.int32).to(torch.int64).bitwise_left_shift_(bits)
    key += torch.arange(n_max, device=device)
    key, column = torch.topk(key, kk, dim=-1, largest=False, sorted=True)
    finite = (key[event, slot] >> bits) < _FLOAT32_INFINITY_BITS
    neighbours = torch.empty(n, kk, dtype=torch.long, device=device)
    neighbours[order] = torch.where(finite, node[event[:, None], column[event, slot]], -1)
    return neighbours


class NeighbourEdgeConv(nn.Module):
    """EdgeConv (Wang et al., ACM TOG 38 (2019) 146) on a fixed number of neighbours per node:

        h_i <- max_{j in N(i)} MLP([h_i, h_j - h_i])      (0 for a node without neighbours)

    ``neighbours`` (N, k) node indices, -1 for none (``knn_neighbours``). The MLP's first
    layer is linear, so it is applied per node, not per edge:
    W [h_i, h_j - h_i] + b = ((W_a - W_b) h_i + b) + W_b h_j, with the (N, width) products
    gathered onto the (N, k) pairs, and the max is a dense reduction over the k slots. The
    same function and parameters (``self.nn``, the keys of ``torch_geometric.nn.EdgeConv``)
    as PyG's EdgeConv with max aggregation on the same edges (tested against it). With
    ``knn_neighbours`` the default graph network trains at 84.8 events/s against 34.7
    with PyG's EdgeConv on a sorted kNN (2.4x, bench/particle_flow.py, 2 threads): PyG's
    scatter-max backward and the (E, 2 d) concatenation were a third of a training step.
    """

    def __init__(self, network: nn.Sequential):
        super().__init__()
        if not isinstance(network[0], nn.Linear):
            raise ValueError("NeighbourEdgeConv: the MLP must start with an nn.Linear")
        self.nn = network

    def forward(self, h: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """h (N, d), neighbours (N, k) -> (N, width)."""
        first = self.nn[0]
        own, other = input_blocks(first, [h.shape[-1]] * 2)
        receiver = torch.addmm(first.bias, h, (own - other).t())  # (N, width)
        sender = h @ other.t()
        # A missing neighbour repeats the nearest one, which leaves the max as it is; a node
        # without any gets 0, as PyG's max aggregation gives it.
        if neighbours.shape[1] == 0:  # no event with two nodes
            neighbours = neighbours.new_full((len(h), 1), -1)
        filled = torch.where(neighbours < 0, neighbours[:, :1], neighbours)
        isolated = filled[:, :1] < 0
        # index_select: its backward is index_add_, several times faster than advanced indexing's
        pairs = sender.index_select(0, filled.clamp(min=0).flatten()).view(*filled.shape, sender.shape[1])
        messages = self.nn[1:](receiver[:, None, :] + pairs)  # (N, k, width')
        return messages.max(dim=1).values.masked_fill(isolated, 0.0)


class FractionGraphNet(nn.Module):
    """The DGCNN of the module docstring: cells with energy (and the track) as nodes, kNN
    EdgeConvs, a global event feature, a per-node sigmoid head, scattered back to images.

    ``window`` (size_eta, size_phi) [rad]: the images' window (cell centres in window
    units); ``k``: neighbours per node; ``width``: feature width; ``n_layers``: EdgeConvs;
    ``depth_step``: the distance between adjacent layers in the kNN space (eta and phi in
    units of max(window) / 2; 0.05 is about two fine cells, so cells see the layers above
    and below); ``dynamic``: rebuild the graph in feature space before every EdgeConv
    after the first; ``use_track``: the track node (False: the track is ignored).
    """

    def __init__(self, layer_shapes: Sequence[Sequence[int]] = DEFAULT_LAYER_SHAPES,
                 window: Sequence[float] = (0.8, 0.8), k: int = 10, width: int = 64, n_layers: int = 3,
                 use_track: bool = True, depth_step: float = 0.05, dynamic: bool = False, energy_scale: float = 0.01):
        super().__init__()
        if k < 1 or n_layers < 1 or width < 1:
            raise ValueError(f"FractionGraphNet: k, width and n_layers must be positive, got {k}, {width}, {n_layers}")
        self.layer_shapes = [tuple(int(n) for n in shape) for shape in layer_shapes]
        self.window = (float(window[0]), float(window[1]))
        self.k, self.use_track, self.depth_step = int(k), use_track, float(depth_step)
        self.dynamic, self.energy_scale = dynamic, energy_scale
        self.n_features = 4 + len(self.layer_shapes) + 1
        widths = [self.n_features] + [int(width)] * int(n_layers)
        self.convs = nn.ModuleList(NeighbourEdgeConv(mlp([2 * a, b, b], final_activation=True))
                                   for a, b in zip(widths[:-1], widths[1:]))
        local = int(width) * int(n_layers)
        self.event = mlp([local, int(width)], final_activation=True)
        self.head = mlp([local + int(width) + self.n_features, int(width), 1])

    def _cell_centres(self, i: torch.Tensor, j: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window-relative (eta, phi) of cell (i, j) of an h x w grid, in units of max(window) / 2."""
        half = 0.5 * max(self.window)
        return (((i + 0.5) / h - 0.5) * self.window[0] / half, ((j + 0.5) / w - 0.5) * self.window[1] / half)

    def nodes(self, layers: Images, track: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch's nodes: ``x`` (N, 11) features, ``pos`` (N, 3) kNN coordinates,
        ``batch`` (N,) event, ``layer`` (N,) layer index (-1: the track node), ``cell`` (N,)
        the flat index b * h_l * w_l + i * w_l + j of the cell in its layer's image."""
        if len(layers) != len(self.layer_shapes):
            raise ValueError(f"FractionGraphNet: {len(layers)} layer images, expected {len(self.layer_shapes)}")
        n_layers, dtype = len(self.layer_shapes), self.head[0].weight.dtype
        parts: list[tuple[torch.Tensor, ...]] = []
        for l, energy in enumerate(layers):
            h, w = energy.shape[1:]
            b, i, j = (energy != 0).nonzero(as_tuple=True)
            eta, phi = self._cell_centres(i.to(dtype), j.to(dtype), h, w)
            depth = torch.full_like(eta, l / max(n_layers - 1, 1))
            onehot = nn.functional.one_hot(torch.full_like(b, l), n_layers).to(dtype)
            x = torch.cat([torch.stack([eta, phi, depth, signed_log(energy[b, i, j].to(dtype), self.energy_scale)], 1),
                           onehot, torch.zeros_like(eta)[:, None]], 1)
            pos = torch.stack([eta, phi, torch.full_like(eta, l * self.depth_step)], 1)
            parts.append((x, pos, b, torch.full_like(b, l), b * h * w + i * w + j))
        if self.use_track:
            flat = track.flatten(1)
            b = (flat != 0).any(dim=1).nonzero(as_tuple=True)[0]
            pixel = flat.abs().argmax(dim=1)[b]
            h, w = track.shape[1:]
            eta, phi = self._cell_centres((pixel // w).to(dtype), (pixel % w).to(dtype), h, w)
            zeros = torch.zeros_like(eta)
            x = torch.cat([torch.stack([eta, phi, zeros, signed_log(flat[b, pixel].to(dtype), self.energy_scale)], 1),
                           zeros[:, None].expand(-1, n_layers), torch.ones_like(eta)[:, None]], 1)
            parts.append((x, torch.stack([eta, phi, zeros], 1), b, torch.full_like(b, -1), torch.zeros_like(b)))
        x, pos, batch, layer, cell = (torch.cat(column) for column in zip(*parts))
        return {"x": x, "pos": pos, "batch": batch, "layer": layer, "cell": cell}

    def node_fractions(self, nodes: Mapping[str, torch.Tensor], n_events: int) -> torch.Tensor:
        """The per-node neutral fraction (N,) in [0, 1] of ``nodes`` (those of ``nodes()``)."""
        x, batch = nodes["x"], nodes["batch"]
        neighbours = knn_neighbours(nodes["pos"], batch, self.k, n_events)
        h, hidden = x, []
        for m, conv in enumerate(self.convs):
            if self.dynamic and m:
                neighbours = knn_neighbours(h, batch, self.k, n_events)
            h = conv(h, neighbours)
            hidden.append(h)
        local = torch.cat(hidden, dim=1)
        event = scatter(self.event(local), batch, dim=0, dim_size=n_events, reduce="max")
        # index_select, not event[batch]: advanced indexing's backward (index_put_ accumulating
        # over the unsorted batch) summed in an order that changed with the threads, run to run
        return torch.sigmoid(self.head(torch.cat([local, event.index_select(0, batch), x], dim=1))).squeeze(1)

    def forward(self, layers: Images, track: torch.Tensor) -> list[torch.Tensor]:
        """Neutral fractions, one (B, h_l, w_l) image per layer, in [0, 1]; 0 in cells without energy."""
        nodes = self.nodes(layers, track)
        n_events = len(track)
        f = self.node_fractions(nodes, n_events)
        out = []
        for l, (h, w) in enumerate(self.layer_shapes):
            mine = nodes["layer"] == l
            image = f.new_zeros(n_events * h * w).index_put((nodes["cell"][mine],), f[mine])
            out.append(image.view(n_events, h, w))
        return out


def _plain(value):
    """Tuples as lists, recursively: hyperparameters a weights-only checkpoint load reads back as they were."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def network_settings(method: str, settings: Mapping | None = None) -> dict:
    """The complete settings of ``method``'s network: its defaults (CNN_SETTINGS or
    GRAPH_SETTINGS) updated by ``settings``. Keys of the other network are ignored (one
    config section can hold both); a key of neither is a ValueError."""
    if method not in METHODS:
        raise ValueError(f"unknown particle-flow method {method!r}; expected one of {METHODS}")
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(CNN_SETTINGS) - set(GRAPH_SETTINGS))
    if unknown:
        raise ValueError(f"unknown particle-flow network settings {unknown}; expected keys of "
                         f"{sorted(set(CNN_SETTINGS) | set(GRAPH_SETTINGS))}")
    defaults = GRAPH_SETTINGS if method == "graph" else CNN_SETTINGS
    return _plain({key: settings.get(key, default) for key, default in defaults.items()})


def build_network(method: str, layer_shapes: Sequence[Sequence[int]] = DEFAULT_LAYER_SHAPES,
                  settings: Mapping | None = None) -> nn.Module:
    """The network of ``method``: ``cnn`` FractionUNet with the track, ``cnn_no_track``
    without it, ``graph`` FractionGraphNet with the track node; ``settings`` as in ``network_settings``."""
    resolved = network_settings(method, settings)
    if method == "graph":
        return FractionGraphNet(layer_shapes, use_track=True, **resolved)
    return FractionUNet(layer_shapes, use_track=method == "cnn", **resolved)


class ParticleFlowModule(StudyModule):
    """Training of a neutral-fraction network (``build_network``) on batch dicts:
    ``layers`` and ``fraction`` and ``weight`` (lists of six (B, h_l, w_l)), ``track``
    (B, 64, 64). Loss ``energy_weighted_mse``; logs train_loss (per step) and val_loss (per
    epoch), as the other studies' modules. The hyperparameters (the method, layer shapes,
    the complete network settings) are saved, so a checkpoint rebuilds the module.
    """

    def __init__(self, method: str = "cnn", layer_shapes: Sequence[Sequence[int]] = DEFAULT_LAYER_SHAPES,
                 settings: Mapping | None = None, learning_rate: float = 1e-3, lr_schedule: str = "constant"):
        super().__init__()
        resolved = network_settings(method, settings)
        self.save_hyperparameters({"method": method, "layer_shapes": _plain(layer_shapes), "settings": resolved,
                                   "learning_rate": float(learning_rate), "lr_schedule": lr_schedule})
        self.network = build_network(method, layer_shapes, resolved)

    def forward(self, layers: Images, track: torch.Tensor) -> list[torch.Tensor]:
        """Neutral fractions, one (B, h_l, w_l) image per layer."""
        return self.network(layers, track)

    def fractions(self, batch: Mapping) -> list[torch.Tensor]:
        """The network's fractions for a batch dict (what evaluation reads)."""
        return self(batch["layers"], batch["track"])

    def loss(self, batch: Mapping, stage: str) -> torch.Tensor:
        """``energy_weighted_mse`` of the batch's fractions."""
        loss = energy_weighted_mse(self.fractions(batch), batch["fraction"], batch["weight"])
        self.log_loss(stage, loss, len(batch["track"]))
        return loss

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self.fractions(batch)
