"""The ATen ops of every trainable model's training step, and which of them torch documents
as nondeterministic on CUDA (``pipeline.ml.determinism``).

    python bench/deterministic_ops.py [--threads 1]

Every model is built as its study's training builds it, with the schema's default settings
(the default run's networks), and takes one training step (its module's ``loss(batch,
"train")``, backward, the module's own optimiser's step) on a tiny synthetic batch of the
shape its DataModule delivers, recorded under a TorchDispatchMode. Printed per model: the
number of distinct ATen ops, the ops of torch's "throws a RuntimeError on CUDA" list it
uses (those in ``ALLOWED_ON_CUDA`` marked, with the reason below the table), the ops of
the "switched to a deterministic kernel" list (the flag's cost on the GPU; ops matched by
CPU-only entries alone marked "CPU only"), and whether the step runs on this CPU under
``torch.use_deterministic_algorithms(True)``.

``MODELS`` and ``training_step`` are what tests/test_deterministic_ops.py checks too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from default_config import default_config  # noqa: E402  (every setting at the schema's default)

from pipeline.ml.determinism import (  # noqa: E402
    ALLOWED_ON_CUDA,
    SWITCHED,
    THROWING,
    Recording,
    record_ops,
)

#: Events, jets or images per batch: the op set does not depend on it.
BATCH = 4


def _vertexing(method: str, config: dict, generator: torch.Generator):
    from pipeline.studies.vertexing.formats import TRACK_FEATURES
    from pipeline.studies.vertexing.models import VertexFinder

    training = config["training"]
    module = VertexFinder(method, len(TRACK_FEATURES), config["vertexing"]["network"],
                          learning_rate=training["learning_rate"], threshold=config["vertexing"]["threshold"],
                          lr_schedule=training["lr_schedule"])
    # pad_tracks' batch: jets of 6, 4, 3 and 1 tracks padded to 6, vertex -1 on padding
    n_tracks = torch.tensor([6, 4, 3, 1])
    mask = torch.arange(6)[None, :] < n_tracks[:, None]
    vertex = torch.where(mask, torch.randint(0, 3, (BATCH, 6), generator=generator), -1)
    x = torch.randn(BATCH, 6, len(TRACK_FEATURES), generator=generator) * mask[..., None]
    return module, {"x": x, "mask": mask, "vertex": vertex, "n_tracks": n_tracks}


def _flavour_tagger(config: dict, generator: torch.Generator):
    from pipeline.studies.flavour_tagging.data import dense_to_graph
    from pipeline.studies.flavour_tagging.models import FlavourTagger
    from pipeline.studies.vertexing.formats import TRACK_FEATURES

    study, training = config["flavour_tagging"], config["training"]
    module = FlavourTagger(len(TRACK_FEATURES), study["width"], study["message_layers"], study["readout_widths"],
                           learning_rate=training["learning_rate"], class_weights=(0.5, 1.5, 1.0),
                           lr_schedule=training["lr_schedule"])
    mask = torch.arange(5)[None, :] < torch.tensor([5, 3, 2, 4])[:, None]
    score = torch.rand(BATCH, 5, 5, generator=generator)
    graph = dense_to_graph(torch.randn(BATCH, 5, len(TRACK_FEATURES), generator=generator), mask,
                           0.5 * (score + score.transpose(1, 2)))
    return module, {**graph, "label": torch.tensor([0, 1, 2, 2])}


def _jet_images(method: str, config: dict, generator: torch.Generator):
    from pipeline.studies.jet_images.train import build_model

    module = build_model(config, method)
    pixels = config["jet_images"]["pixels"]
    image = torch.rand(BATCH, pixels, pixels, generator=generator)
    image = image / image.sum(dim=(1, 2), keepdim=True)  # normalised, as the DataModule's
    batch = {"image": image, "label": torch.tensor([0.0, 1.0, 0.0, 1.0])}
    if method == "denoising_autoencoder":
        batch["target"] = torch.rand(BATCH, pixels, pixels, generator=generator)
        batch["target"] /= batch["target"].sum(dim=(1, 2), keepdim=True)
    return module, batch


def _layer_images(shapes, generator: torch.Generator, occupancy: float = 0.2) -> list[torch.Tensor]:
    """Cells with 0.1-5 GeV (a few slightly negative) at ``occupancy``, 0 elsewhere, per layer."""
    images = []
    for h, w in shapes:
        energy = torch.rand(BATCH, h, w, generator=generator) * 4.9 + 0.1
        energy[torch.rand(BATCH, h, w, generator=generator) < 0.05] *= -0.05
        images.append(torch.where(torch.rand(BATCH, h, w, generator=generator) < occupancy, energy, 0.0))
    return images


def _track_image(fine: int, generator: torch.Generator) -> torch.Tensor:
    track = torch.zeros(BATCH, fine, fine)
    where = torch.randint(0, fine, (BATCH - 1, 2), generator=generator)  # the last event without a track
    track[torch.arange(BATCH - 1), where[:, 0], where[:, 1]] = 20.0
    return track


def _particle_flow(method: str, config: dict, generator: torch.Generator):
    from pipeline.simulation.window_geometry import WindowGeometry
    from pipeline.studies.particle_flow.train import build_model

    module = build_model(config, method)
    geometry = WindowGeometry.from_config(config)
    layers = _layer_images(geometry.shapes, generator)
    fractions = [torch.rand(image.shape, generator=generator).round() for image in layers]
    return module, {"layers": layers, "track": _track_image(geometry.fine, generator), "fraction": fractions,
                    "weight": [image.abs() for image in layers]}


def _super_resolution(method: str, config: dict, generator: torch.Generator):
    from pipeline.studies.super_resolution.train import build_model, detector_geometry

    module = build_model(config, method, loss_scales=[1e-3] * 6)
    shapes, fine, _ = detector_geometry(config)
    fine_images = torch.stack(_layer_images([(fine, fine)] * len(shapes), generator), dim=1)
    coarse = [fine_images[:, layer].reshape(BATCH, h, fine // h, w, fine // w).sum(dim=(2, 4))
              for layer, (h, w) in enumerate(shapes)]
    return module, {"coarse": coarse, "track": _track_image(fine, generator), "fine": fine_images}


#: Every trainable model of the project: name -> builder(config, generator) -> (module, one training batch).
MODELS: dict[str, Callable] = {
    **{f"vertexing.{m}": (lambda c, g, m=m: _vertexing(m, c, g)) for m in ("set2graph", "track_pair", "rnn")},
    "flavour_tagging.tagger": _flavour_tagger,
    **{f"jet_images.{m}": (lambda c, g, m=m: _jet_images(m, c, g))
       for m in ("mlp", "cnn", "autoencoder", "autoencoder_inverse", "denoising_autoencoder")},
    **{f"particle_flow.{m}": (lambda c, g, m=m: _particle_flow(m, c, g)) for m in ("cnn", "cnn_no_track", "graph")},
    **{f"super_resolution.{m}": (lambda c, g, m=m: _super_resolution(m, c, g)) for m in ("redistribute", "cnn")},
}


def training_step(name: str, seed: int = 0) -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    """The module of model ``name`` (MODELS) and a callable doing one training step on its
    batch: the module's ``loss(batch, "train")``, backward, its optimiser's step (Adam from
    ``configure_optimizers``); returns the loss. The module's ``log`` is a no-op (no Trainer)."""
    config = default_config()
    torch.manual_seed(seed)
    module, batch = MODELS[name](config, torch.Generator().manual_seed(seed))
    module.train()
    module.log = lambda *args, **kwargs: None
    optimiser = module.configure_optimizers()

    def step() -> torch.Tensor:
        optimiser.zero_grad()
        loss = module.loss(batch, "train")
        loss.backward()
        optimiser.step()
        return loss.detach()

    return module, step


def runs_deterministically(step: Callable[[], torch.Tensor]) -> str:
    """'ok' if ``step`` runs under torch.use_deterministic_algorithms(True) here (the flag
    restored after), else the first line of its error."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        step()
        return "ok"
    except RuntimeError as error:
        return str(error).splitlines()[0]
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def inventory(name: str) -> tuple[Recording, str]:
    """The recorded ops of one training step of ``name`` and the result of a second step under the flag."""
    _, step = training_step(name)
    recording = record_ops(step)
    return recording, runs_deterministically(step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; {len(THROWING)} throwing and {len(SWITCHED)} switched entries mapped\n")
    print("| model | ATen ops | throws on CUDA (documented) | switched to a deterministic kernel | CPU step, flag on |")
    print("|---|---|---|---|---|")
    allowed_used = set()
    start = time.perf_counter()
    for name in MODELS:
        recording, cpu = inventory(name)
        throwing = []
        for entry, op in sorted(recording.uses(THROWING), key=lambda pair: pair[1]):
            allowed = (entry, op) in ALLOWED_ON_CUDA
            allowed_used |= {(entry, op)} if allowed else set()
            throwing.append(f"`{op}`" + (" (allowed)" if allowed else ""))
        devices: dict[str, set[str]] = {}
        for entry, op in recording.uses(SWITCHED):
            devices.setdefault(op, set()).add(SWITCHED[entry].device)
        switched = sorted(op + (" (CPU only)" if found == {"cpu"} else "") for op, found in devices.items())
        print(f"| {name} | {len(recording.ops)} | {', '.join(throwing) or 'none'} | "
              f"{', '.join(f'`{op}`' for op in switched) or 'none'} | {cpu} |")
    for entry, op in sorted(allowed_used):
        print(f"\nallowed `{op}` ({entry}): {ALLOWED_ON_CUDA[(entry, op)]}")
    print(f"\n{len(MODELS)} models in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
