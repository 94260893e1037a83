"""The learned super-resolution models (the second half of Di Bello et al., EPJC 81 (2021) 107).

Per event the detector gives six layer images E_l (B, h_l, w_l) [GeV] over one (eta, phi)
window (3 EM then 3 HAD, axis 0 eta, axis 1 phi, ``layer_shapes``; the topo-cluster
cells, noisy, so cells can be slightly negative; 0 elsewhere) and a track image T
(B, F, F) (the track's momentum [GeV] at its pixel in em2, all zero without a track).
Every network maps ``forward(coarse, track)`` to the six layers on the fine grid, Y
(B, L, F, F) [GeV] (F = ``fine``, 64), the fine truth's estimate. Layer l's detector cell
(I, J) covers the fine cells (i, j), i in [I fe, (I + 1) fe), j in [J fp, (J + 1) fp),
with factors (fe, fp) = (F / h_l, F / w_l) (``block_sizes``; (1, 2) for em1's 64 x 32,
(8, 8) for had3's 8 x 8). Both are trained on the squared error of the fine cells, e_bl =
mean_{i, j} (Y_blij - Y*_blij)^2 (Y* the batch's ``fine``), relative to the truth's scale,
half per layer and half per event (``fine_loss``):

    L = 1/2 (1 / L) sum_l mean_b e_bl / S_l  +  1/2 mean_{b, l} e_bl / (m_bl + S_l / 100)

with S_l the mean square of layer l's truth over the training set (``batches.fine_mean_squares``)
and m_bl = mean_{i, j} Y*_blij^2 the event's. The first term is the MSE of the evaluation,
each layer counted alike; the second weighs every event's shower alike, as PSNR (a mean over
events of a log of each event's relative error) does: trained on the first alone, the default
run's ``redistribute`` beat ``bicubic`` in every layer's MSE but lost to it by 0.01 dB of PSNR
in had3, its sharper showers paying in the many events with a small had3 deposit; on both it
leads in every layer (had3 27.26 dB against bicubic's 27.22, MSE 2.02e-6 against 2.08e-6 GeV^2).
With the plain mean over layers the second EM layer, where the pi0's photons deposit most,
made the loss, and the networks of the default run (4 epochs) lost to ``bicubic`` in had1
and had2 (MSE 2.36e-5 and 1.82e-5 GeV^2 against 2.35e-5 and 1.76e-5) while far ahead in em2
(1.37e-4 against 6.23e-4). S_l is fixed, not the batch's, and floors the event term: a batch
or an event whose hadronic layers are nearly empty (single pi0s) would otherwise weigh any
stray energy there without bound.

Energies enter through the signed log a(E) = asinh(E / energy_scale) of the particle-flow
networks (``pipeline.ml.layers.signed_log``): linear through zero, logarithmic above, so
inputs are O(1) from noise (~0.01 GeV) to showers (~100 GeV).

``SubPixelTrunk`` (the features both share)
    per layer   a 3x3 conv at the layer's own grid, a(E_l) (B, 1, h_l, w_l) -> (B, C fe fp, h_l, w_l),
                rearranged sub-pixel style (Shi et al., CVPR 2016; ``sub_pixel``, torch's PixelShuffle
                for fe = fp) to (B, C, F, F): fine cell (I fe + u, J fp + v) of map c takes channel
                c fe fp + u fp + v of cell (I, J)
    merge       the six maps and a(T) concatenated (B, 6 C + 1, F, F), a 1x1 conv to C; computed
                without the concatenation: the 1x1 conv's block of layer l is folded into
                layer l's 3x3 conv (both affine), so each layer's conv gives its C merged maps
                directly and the six are summed (the same function and parameters; the
                backward of the 97-channel 1x1 conv was a third of a training step;
                bench/super_resolution.py, docs/benchmarks.md)
    blocks      ``blocks`` residual blocks at F x F: x + GN(conv3x3(lrelu(GN(conv3x3(x)))))
    out         (B, C, F, F)

``RedistributionNet`` (method ``redistribute``; energy-conserving)
    a 1x1 conv to one logit map per layer z (B, L, F, F); within every detector cell a
    softmax over its fe x fp sub-cells, times the cell's energy (``EnergySharing``):

        Y_l(i, j) = E_l(I, J) exp z_l(i, j) / sum_{(i', j') in (I, J)} exp z_l(i', j')

    so every detector cell's energy is kept exactly, for any input (negative cells too:
    their shares are all negative). The network only decides where within the cell. The
    logits are a correction to the ``bicubic`` shares s_l (``interpolation.bicubic_shares``),
    z_l = log(s_l + 1e-3 / (fe fp)) + head_l: training starts from the bicubic interpolation
    (mixed with 0.1 % of the uniform one, so a clipped sub-cell can still be reached).

``CorrectionNet`` (method ``cnn``; free)
    a 1x1 conv to L maps of corrections c (B, L, F, F) added to the bicubic interpolation
    in units of the local energy density,

        Y_l = bicubic(E_l) + c_l (to_fine(|E_l|) + energy_scale)

    (``pipeline.ml.layers.to_fine``: each cell's energy spread evenly over its sub-cells): a
    global skip, so training starts from the ``bicubic`` interpolation; free to move energy
    between cells (and to create or remove it). Corrections in GeV instead made Adam's first
    step (the same size for every weight) put energy of order 0.05 GeV in every fine cell:
    on a test batch the loss rose from 0.66 to 283 (learning rate 3e-3).

Both heads start at zero (weights and bias), so an untrained network is the ``bicubic``
interpolation (``redistribute`` to 0.1 %, ``cnn`` exactly): each learns what the best
classical baseline misses, and a network that learns nothing is no worse than it.
``SuperResolutionModule`` wraps either (``build_network``) for training, Adam through
``pipeline.ml.trainer.adam_with_schedule``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

from pipeline.ml.layers import block_sizes, signed_log, to_fine
from pipeline.ml.module import StudyModule
from pipeline.studies.super_resolution.interpolation import bicubic, bicubic_shares
from pipeline.studies.super_resolution.methods import LEARNED

#: The settings of the networks: the schema's ``super_resolution.network``, no defaults here.
NETWORK_KEYS = ("channels", "blocks", "energy_scale")

Images = Sequence[torch.Tensor]


def sub_pixel(x: torch.Tensor, factors: tuple[int, int]) -> torch.Tensor:
    """(B, C fe fp, H, W) -> (B, C, H fe, W fp): out[b, c, I fe + u, J fp + v] = x[b, c fe fp + u fp + v, I, J];
    torch.nn.PixelShuffle(r) for fe = fp = r."""
    fe, fp = factors
    b, channels, h, w = x.shape
    if channels % (fe * fp):
        raise ValueError(f"sub_pixel: {channels} channels do not split into maps of {fe} x {fp} sub-pixels")
    return (x.reshape(b, channels // (fe * fp), fe, fp, h, w).permute(0, 1, 4, 2, 5, 3)
            .reshape(b, channels // (fe * fp), h * fe, w * fp))


def _norm(channels: int) -> nn.GroupNorm:
    """Group normalisation (per event, as the particle-flow UNet's), in groups that divide ``channels``."""
    return nn.GroupNorm(math.gcd(4, channels), channels)


class ResidualBlock(nn.Module):
    """x + GN(conv3x3(lrelu(GN(conv3x3(x))))) at the input's resolution, ``channels`` maps."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), _norm(channels), nn.LeakyReLU(0.01),
                                  nn.Conv2d(channels, channels, 3, padding=1), _norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def check_inputs(coarse: Images, track: torch.Tensor, layer_shapes: Sequence[tuple[int, int]], fine: int) -> None:
    """ValueError unless ``coarse`` is one (B, h_l, w_l) image per layer and ``track`` (B, fine, fine)."""
    if len(coarse) != len(layer_shapes):
        raise ValueError(f"{len(coarse)} layer images, expected {len(layer_shapes)}")
    for l, (energy, shape) in enumerate(zip(coarse, layer_shapes)):
        if tuple(energy.shape[1:]) != tuple(shape) or len(energy) != len(track):
            raise ValueError(f"layer {l}: image of shape {tuple(energy.shape)}, expected ({len(track)}, {shape[0]}, "
                             f"{shape[1]})")
    if tuple(track.shape[1:]) != (fine, fine):
        raise ValueError(f"track image of shape {tuple(track.shape)}, expected (B, {fine}, {fine})")


class SubPixelTrunk(nn.Module):
    """The shared trunk of the module docstring: (coarse layers, track) -> (B, channels, fine, fine)."""

    def __init__(self, layer_shapes: Sequence[Sequence[int]], fine: int, *, channels: int, blocks: int,
                 energy_scale: float):
        super().__init__()
        if channels < 1 or blocks < 0:
            raise ValueError(f"SubPixelTrunk: channels must be positive and blocks not negative, "
                             f"got {channels}, {blocks}")
        self.layer_shapes = [tuple(int(n) for n in shape) for shape in layer_shapes]
        self.factors = block_sizes(self.layer_shapes, fine)
        self.fine, self.channels, self.energy_scale = int(fine), int(channels), float(energy_scale)
        self.upsample = nn.ModuleList(nn.Conv2d(1, self.channels * fe * fp, 3, padding=1) for fe, fp in self.factors)
        self.merge = nn.Conv2d(len(self.layer_shapes) * self.channels + 1, self.channels, 1)
        self.blocks = nn.Sequential(*(ResidualBlock(self.channels) for _ in range(int(blocks))))

    def forward(self, coarse: Images, track: torch.Tensor) -> torch.Tensor:
        check_inputs(coarse, track, self.layer_shapes, self.fine)
        c = self.channels
        merge = self.merge.weight[:, :, 0, 0]  # (C, L C + 1)
        *blocks, track_weight = merge.split(c, dim=1)  # L (C out, C in) blocks of the layers' maps, then a(T)'s
        x = self.merge.bias[:, None, None] + track_weight[:, :, None] * signed_log(track.to(merge.dtype),
                                                                                 self.energy_scale)[:, None]
        for block, conv, energy, (fe, fp) in zip(blocks, self.upsample, coarse, self.factors):
            kernel = conv.weight.shape[-2:]
            # Output channel o fe fp + s of the folded conv is sum_c block[o, c] (channel c fe fp + s).
            weight = torch.einsum("oc,cskxy->oskxy", block, conv.weight.view(c, fe * fp, 1, *kernel))
            bias = block @ conv.bias.view(c, fe * fp)
            folded = nn.functional.conv2d(signed_log(energy.to(merge.dtype), self.energy_scale)[:, None],
                                          weight.reshape(c * fe * fp, 1, *kernel), bias.reshape(-1),
                                          padding=conv.padding)
            x = x + sub_pixel(folded, (fe, fp))
        return self.blocks(x)


class EnergySharing(nn.Module):
    """Every detector cell's energy shared among its fine cells by a softmax of their logits:
    forward(logits (B, L, F, F), coarse [(B, h_l, w_l)] [GeV]) -> (B, L, F, F) [GeV], whose
    sums over each layer's detector cells (``interpolation.to_coarse`` with its ``factors``) are
    ``coarse`` (to float rounding), whatever the logits and energies."""

    def __init__(self, factors: Sequence[tuple[int, int]]):
        super().__init__()
        self.factors = [(int(fe), int(fp)) for fe, fp in factors]

    def forward(self, logits: torch.Tensor, coarse: Images) -> torch.Tensor:
        if logits.shape[1] != len(self.factors) or len(coarse) != len(self.factors):
            raise ValueError(f"EnergySharing: {logits.shape[1]} logit maps and {len(coarse)} layer images for "
                             f"{len(self.factors)} layers")
        b, _, hf, wf = logits.shape
        out = []
        for l, ((fe, fp), energy) in enumerate(zip(self.factors, coarse)):
            z = logits[:, l].reshape(b, hf // fe, fe, wf // fp, fp)
            share = torch.exp(z - torch.logsumexp(z, dim=(2, 4), keepdim=True))
            out.append((share * energy.to(z.dtype)[:, :, None, :, None]).reshape(b, hf, wf))
        return torch.stack(out, dim=1)


def _zero_head(channels: int, n_layers: int) -> nn.Conv2d:
    """The 1x1 conv of a head, all zero: an untrained network is the bicubic interpolation."""
    head = nn.Conv2d(channels, n_layers, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class RedistributionNet(nn.Module):
    """Method ``redistribute``: the trunk, a 1x1 conv to L logit maps added to the log
    bicubic shares, ``EnergySharing`` (module docstring); every detector cell's energy kept exactly."""

    def __init__(self, layer_shapes: Sequence[Sequence[int]], fine: int, *, channels: int, blocks: int,
                 energy_scale: float):
        super().__init__()
        self.trunk = SubPixelTrunk(layer_shapes, fine, channels=channels, blocks=blocks, energy_scale=energy_scale)
        self.head = _zero_head(self.trunk.channels, len(self.trunk.layer_shapes))
        self.sharing = EnergySharing(self.trunk.factors)

    def forward(self, coarse: Images, track: torch.Tensor) -> torch.Tensor:
        """(B, L, F, F) fine images [GeV]."""
        logits = self.head(self.trunk(coarse, track))
        prior = torch.stack([torch.log(bicubic_shares(energy.to(logits.dtype), factors) + 1e-3 / (factors[0] * factors[1]))
                             for energy, factors in zip(coarse, self.trunk.factors)], dim=1)
        return self.sharing(logits + prior, coarse)


class CorrectionNet(nn.Module):
    """Method ``cnn``: the trunk, a 1x1 conv to L maps of corrections, in units of the local
    energy density, added to the bicubic interpolation of every layer (module docstring);
    free to move energy."""

    def __init__(self, layer_shapes: Sequence[Sequence[int]], fine: int, *, channels: int, blocks: int,
                 energy_scale: float):
        super().__init__()
        self.trunk = SubPixelTrunk(layer_shapes, fine, channels=channels, blocks=blocks, energy_scale=energy_scale)
        self.head = _zero_head(self.trunk.channels, len(self.trunk.layer_shapes))

    def forward(self, coarse: Images, track: torch.Tensor) -> torch.Tensor:
        """(B, L, F, F) fine images [GeV]."""
        correction = self.head(self.trunk(coarse, track))
        energies = [energy.to(correction.dtype) for energy in coarse]
        interpolated = torch.stack([bicubic(e, f) for e, f in zip(energies, self.trunk.factors)], dim=1)
        density = torch.stack([to_fine(e.abs(), f) for e, f in zip(energies, self.trunk.factors)], dim=1)
        return interpolated + correction * (density + self.trunk.energy_scale)


def fine_mse(predicted: torch.Tensor, target: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The loss of the module docstring: (B, L, F, F) predicted and true fine images [GeV],
    (L,) scales S_l [GeV^2] -> the mean over layers of each layer's mean squared error over
    events and fine cells divided by S_l (a dimensionless scalar; plain MSE [GeV^2] for S = 1)."""
    error = (predicted - target.to(predicted.dtype)).square().mean(dim=(0, 2, 3))
    return (error / scales.to(error)).mean()


def event_relative_mse(predicted: torch.Tensor, target: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(B, L, F, F) predicted and true fine images [GeV], (L,) scales S_l [GeV^2] -> the mean
    over events and layers of each event's layer MSE over its truth's mean square + S_l / 100
    (a dimensionless scalar; the module docstring's second term)."""
    target = target.to(predicted.dtype)
    error = (predicted - target).square().mean(dim=(2, 3))
    return (error / (target.square().mean(dim=(2, 3)) + scales.to(error) / 100)).mean()


def fine_loss(predicted: torch.Tensor, target: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The training loss of the module docstring: the mean of ``fine_mse`` and ``event_relative_mse``."""
    return 0.5 * (fine_mse(predicted, target, scales) + event_relative_mse(predicted, target, scales))


_NETWORKS = {"redistribute": RedistributionNet, "cnn": CorrectionNet}


def network_settings(settings: Mapping) -> dict:
    """The network settings (NETWORK_KEYS) of ``settings``, which must hold every one of them
    (the config's ``super_resolution.network``); a missing or an unknown key is a ValueError naming it."""
    unknown = sorted(set(settings) - set(NETWORK_KEYS))
    if unknown:
        raise ValueError(f"unknown super-resolution network settings {unknown}; expected keys of "
                         f"{sorted(NETWORK_KEYS)}")
    missing = [key for key in NETWORK_KEYS if key not in settings]
    if missing:
        raise ValueError(f"super-resolution network settings: missing {missing}; expected every one of "
                         f"{list(NETWORK_KEYS)}")
    return {"channels": int(settings["channels"]), "blocks": int(settings["blocks"]),
            "energy_scale": float(settings["energy_scale"])}


def build_network(method: str, layer_shapes: Sequence[Sequence[int]], fine: int, settings: Mapping) -> nn.Module:
    """The network of ``method``: ``redistribute`` RedistributionNet, ``cnn`` CorrectionNet;
    ``settings`` as in ``network_settings``."""
    if method not in LEARNED:
        raise ValueError(f"unknown learned super-resolution method {method!r}; expected one of {LEARNED}")
    return _NETWORKS[method](layer_shapes, fine, **network_settings(settings))


class SuperResolutionModule(StudyModule):
    """Training of a super-resolution network (``build_network``) on batch dicts of
    ``data.SuperResolutionDataset``: ``coarse`` (list of six (B, h_l, w_l)), ``track``
    (B, F, F), ``fine`` (B, 6, F, F) [GeV]. Loss: every layer's mean squared error of the fine
    cells over ``loss_scales`` (S_l [GeV^2], one per layer, the training set's mean squares;
    None: 1 GeV^2 each) (``fine_loss``); logs train_loss (per step) and val_loss
    (per epoch), as the other studies' modules. The hyperparameters (method, layer shapes,
    fine, the complete network settings, the loss scales) are saved, so a checkpoint rebuilds
    the module (``pipeline.ml.checkpoints.load_module``).
    """

    def __init__(self, method: str, layer_shapes: Sequence[Sequence[int]], fine: int, settings: Mapping, *,
                 learning_rate: float, lr_schedule: str, loss_scales: Sequence[float] | None = None):
        super().__init__()
        resolved = network_settings(settings)
        scales = [1.0] * len(layer_shapes) if loss_scales is None else [float(s) for s in loss_scales]
        if len(scales) != len(layer_shapes) or not all(s > 0 and math.isfinite(s) for s in scales):
            raise ValueError(f"SuperResolutionModule: loss_scales {scales}; expected one positive number [GeV^2] "
                             f"per layer ({len(layer_shapes)})")
        # Plain lists and numbers: a weights-only checkpoint load reads them back as they were.
        self.save_hyperparameters({"method": method, "layer_shapes": [[int(h), int(w)] for h, w in layer_shapes],
                                   "fine": int(fine), "settings": resolved, "learning_rate": float(learning_rate),
                                   "lr_schedule": lr_schedule, "loss_scales": scales})
        self.network = build_network(method, layer_shapes, fine, resolved)
        self.register_buffer("loss_scales", torch.tensor(scales), persistent=False)

    def forward(self, coarse: Images, track: torch.Tensor) -> torch.Tensor:
        """(B, L, F, F) fine images [GeV]."""
        return self.network(coarse, track)

    def fine_images(self, batch: Mapping) -> torch.Tensor:
        """The network's fine images (B, L, F, F) [GeV] for a batch dict (tensors, or the
        NumPy arrays of ``batches.SuperResolutionBatches``: moved to the module's device)."""
        coarse = [torch.as_tensor(image, device=self.device) for image in batch["coarse"]]
        return self(coarse, torch.as_tensor(batch["track"], device=self.device))

    def loss(self, batch: Mapping, stage: str) -> torch.Tensor:
        """``fine_loss`` of the batch's fine images over ``loss_scales``."""
        loss = fine_loss(self.fine_images(batch), batch["fine"], self.loss_scales)
        self.log_loss(stage, loss, len(batch["track"]))
        return loss

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self.fine_images(batch)
