"""The networks of the jet-image study: top taggers on images and convolutional autoencoders.

* ``ImageTagger``: one logit (top vs QCD) from a jet image, with a dense backbone on the
  flattened image (``mlp``, the landscape paper's TopoDNN-like dense network) or a small
  CNN (``cnn``: 3x3 convolutions, ReLU, 2x2 max-pooling after each, then a dense layer).
* ``ImageAutoencoder``: a convolutional encoder to a small dense latent space and the
  mirrored decoder (after Farina, Nakai and Shih, smaller); trained on one class, its
  per-image reconstruction error is an anomaly score. With ``denoising`` it maps noisy
  images to clean ones.

Images are batches (B, pixels, pixels), axis 1 = delta eta, axis 2 = delta phi; the
models add the channel axis themselves. Both multiply their input by ``input_scale``
first: images normalised to a pixel sum of 1 have pixels of order 1 / pixels^2, far below
the unit scale the default initialisation of the layers expects, and networks fed them
as they are barely move in the first epochs (``input_scale_for``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.ml.layers import dense_stack
from pipeline.ml.module import StudyModule
from pipeline.studies.jet_images.metrics import roc_auc


def input_scale_for(pixels: int, normalised: bool) -> float:
    """The input scale of a study's models: pixels^2 for normalised images (a uniform image
    then has pixels of 1), 1 for images in GeV (whose average pixel is of order 1 already)."""
    return float(pixels * pixels) if normalised else 1.0


def pooled_sizes(pixels: int, blocks: int) -> list[int]:
    """Image side after each of ``blocks`` 2x2 max-poolings (floor), the input first."""
    sizes = [pixels]
    for _ in range(blocks):
        sizes.append(sizes[-1] // 2)
    if sizes[-1] < 1:
        raise ValueError(f"{blocks} convolution blocks (2x2 pooling each) need images of at least "
                         f"{2 ** blocks} pixels, got {pixels}")
    return sizes


def conv_blocks(channels: Sequence[int], in_channels: int = 1) -> nn.Sequential:
    """3x3 convolutions (padding 1) of the given output channels, each followed by ReLU and 2x2 max-pooling."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip([in_channels, *channels[:-1]], channels):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers)


class ImageTagger(StudyModule):
    """Top-vs-QCD classifier of jet images: one logit, binary cross-entropy.

    backbone ``mlp``: dense layers of ``widths`` on the flattened image; ``cnn``:
    conv_blocks of ``channels``, then one dense layer of ``dense`` units (the settings of
    the other backbone are not used and may be None). Both end in dropout and a linear
    layer to the logit. Logs train_loss, val_loss, val_accuracy
    (score threshold 0.5) and val_auc (over the whole validation set). ``input_scale``:
    the factor applied to the images first (see the module docstring).
    """

    def __init__(self, pixels: int, backbone: str, *, widths: Sequence[int] | None = None,
                 channels: Sequence[int] | None = None, dense: int | None = None, dropout: float,
                 learning_rate: float, lr_schedule: str, input_scale: float = 1.0):
        super().__init__()
        self.save_hyperparameters()
        needed = {"mlp": {"widths": widths}, "cnn": {"channels": channels, "dense": dense}}.get(backbone, {})
        missing = [key for key, value in needed.items() if value is None]
        if missing:
            raise ValueError(f"ImageTagger: the {backbone} backbone needs {missing}")
        if backbone == "mlp":
            self.backbone = nn.Sequential(nn.Flatten(), dense_stack([pixels * pixels, *widths], dropout))
            width = widths[-1]
        elif backbone == "cnn":
            side = pooled_sizes(pixels, len(channels))[-1]
            self.backbone = nn.Sequential(conv_blocks(channels), nn.Flatten(),
                                          dense_stack([channels[-1] * side * side, dense], dropout))
            width = dense
        else:
            raise ValueError(f"unknown image-tagger backbone {backbone!r}; expected mlp or cnn")
        self.head = nn.Linear(width, 1)
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of images (B, pixels, pixels); sigmoid(logit) = P(top)."""
        x = images * self.hparams.input_scale
        x = x.unsqueeze(1) if self.hparams.backbone == "cnn" else x
        return self.head(self.backbone(x)).squeeze(-1)

    def loss(self, batch: Mapping[str, torch.Tensor], stage: str) -> torch.Tensor:
        """The binary cross-entropy; at validation the logits are kept for the epoch's accuracy and AUC."""
        logits = self(batch["image"])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])
        self.log_loss(stage, loss, len(logits))
        if stage == "val":
            self._val_outputs.append((logits.detach().float().cpu(), batch["label"].cpu()))
        return loss

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        logits, labels = (self.gather_validation(torch.cat(parts).numpy()) for parts in zip(*self._val_outputs))
        self._val_outputs.clear()
        self.log("val_accuracy", float(np.mean((logits > 0) == (labels > 0.5))), prog_bar=True)
        if 0 < labels.sum() < len(labels):
            self.log("val_auc", roc_auc(labels, logits), prog_bar=True)


class ImageAutoencoder(StudyModule):
    """Convolutional autoencoder of jet images; mean squared error per pixel as the loss.

    Encoder: conv_blocks of ``channels``, flattened, a linear map to ``latent`` units.
    Decoder, mirrored: a linear map back, ReLU, then per block (in reverse) an upsampling
    to the encoder's size at that depth and a 3x3 convolution with ReLU, and a last 3x3
    convolution to one channel. With ``normalised`` inputs (images summing to 1) the
    output is a softmax over the pixels, so reconstructions are normalised images too;
    otherwise it is linear [GeV]. ``denoising``: the batches' ``image`` is the noisy
    input and ``target`` the clean image to reconstruct. ``trained_on`` ("qcd", "top" or
    "all") records the training class, so evaluation knows which class is the anomaly.
    ``input_scale``: the factor applied to the images first; the loss is in the scaled
    units too (for normalised images a loss of order 1e-6 would leave the gradients
    next to Adam's epsilon).
    """

    def __init__(self, pixels: int, channels: Sequence[int], latent: int, *, normalised: bool,
                 denoising: bool = False, trained_on: str = "all",
                 learning_rate: float, lr_schedule: str, input_scale: float = 1.0):
        super().__init__()
        self.save_hyperparameters()
        if trained_on not in ("qcd", "top", "all"):
            raise ValueError(f"trained_on must be qcd, top or all, got {trained_on!r}")
        sizes = pooled_sizes(pixels, len(channels))
        self.bottleneck = (channels[-1], sizes[-1], sizes[-1])
        flat = int(np.prod(self.bottleneck))
        self.encoder = nn.Sequential(conv_blocks(channels), nn.Flatten(), nn.Linear(flat, latent))
        decoder: list[nn.Module] = [nn.Linear(latent, flat), nn.ReLU(), nn.Unflatten(1, self.bottleneck)]
        outputs = [channels[0], *channels[:-1]]
        for depth in reversed(range(len(channels))):
            decoder += [nn.Upsample(size=(sizes[depth], sizes[depth])),
                        nn.Conv2d(channels[depth], outputs[depth], 3, padding=1), nn.ReLU()]
        decoder.append(nn.Conv2d(channels[0], 1, 3, padding=1))
        self.decoder = nn.Sequential(*decoder)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstructions (B, pixels, pixels) of images (B, pixels, pixels)."""
        out = self.decoder(self.encoder(images.unsqueeze(1) * self.hparams.input_scale)).squeeze(1)
        if self.hparams.normalised:
            out = torch.softmax(out.flatten(1), dim=1).view_as(out)
        return out

    def reconstruction_error(self, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error per pixel (B,) between the reconstruction of ``images`` and
        ``target`` (default: the images themselves: the anomaly score), in units of the
        scaled images (input_scale x images) squared."""
        target = images if target is None else target
        return ((self(images) - target) * self.hparams.input_scale).pow(2).flatten(1).mean(dim=1)

    def loss(self, batch: Mapping[str, torch.Tensor], stage: str) -> torch.Tensor:
        """The mean reconstruction error of the batch (of its clean ``target`` when denoising)."""
        target = batch["target"] if self.hparams.denoising else batch["image"]
        loss = self.reconstruction_error(batch["image"], target).mean()
        self.log_loss(stage, loss, len(target))
        return loss
