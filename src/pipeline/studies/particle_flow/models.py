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

from pipeline.ml.layers import NeighbourEdgeConv, block_sizes, knn_neighbours, mlp, signed_log, to_fine
from pipeline.ml.module import StudyModule
from pipeline.studies.particle_flow.methods import LEARNED

#: The settings of FractionUNet (the ``settings`` of ``build_network``): the schema's
#: ``particle_flow.cnn`` and ``particle_flow.calorimeter.fine``, no defaults here.
CNN_KEYS = ("fine", "channels", "energy_scale")
#: The settings of FractionGraphNet: the schema's ``particle_flow.graph`` and ``particle_flow.calorimeter.window``.
GRAPH_KEYS = ("window", "k", "width", "n_layers", "depth_step", "dynamic", "energy_scale")

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

    def __init__(self, layer_shapes: Sequence[Sequence[int]], *, fine: int, channels: Sequence[int], use_track: bool,
                 energy_scale: float):
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

    def __init__(self, layer_shapes: Sequence[Sequence[int]], *, window: Sequence[float], k: int, width: int,
                 n_layers: int, use_track: bool, depth_step: float, dynamic: bool, energy_scale: float):
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


def network_settings(method: str, settings: Mapping) -> dict:
    """The settings of ``method``'s network (CNN_KEYS or GRAPH_KEYS) out of ``settings``, which
    must hold every one of them (the config's values: ``train.network_config``). Keys of the
    other network are ignored (one config section can hold both); a missing key or a key of
    neither is a ValueError naming it."""
    if method not in LEARNED:
        raise ValueError(f"unknown particle-flow method {method!r}; expected one of {LEARNED}")
    unknown = sorted(set(settings) - set(CNN_KEYS) - set(GRAPH_KEYS))
    if unknown:
        raise ValueError(f"unknown particle-flow network settings {unknown}; expected keys of "
                         f"{sorted(set(CNN_KEYS) | set(GRAPH_KEYS))}")
    keys = GRAPH_KEYS if method == "graph" else CNN_KEYS
    missing = [key for key in keys if key not in settings]
    if missing:
        raise ValueError(f"particle-flow network settings of {method!r}: missing {missing}; expected every one of "
                         f"{list(keys)}")
    return _plain({key: settings[key] for key in keys})


def build_network(method: str, layer_shapes: Sequence[Sequence[int]], settings: Mapping) -> nn.Module:
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

    def __init__(self, method: str, layer_shapes: Sequence[Sequence[int]], settings: Mapping, *,
                 learning_rate: float, lr_schedule: str):
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
