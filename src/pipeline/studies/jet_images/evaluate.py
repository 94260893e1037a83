"""Evaluation of the jet-image study on the test file: tables, figures, MLflow runs.

Three evaluations, each streaming the test file in chunks of ROWS_PER_READ jets (memory:
one chunk of images, plus one score per jet and model for the ROC curves):

* ``evaluate_taggers``: the MLP and CNN top taggers. ``taggers.csv`` and ``taggers.md``
  (AUC, accuracy at probability 0.5, background rejection 1/eps_B at signal efficiency
  0.3 and 0.5, with the landscape paper's numbers in rows of their own), ``roc``.
* ``evaluate_autoencoders``: the reconstruction error as anomaly score, of the
  autoencoder trained on QCD (top is the anomaly, the signal) and of the inverse one
  trained on top (QCD is the signal). ``autoencoder.csv`` and ``.md`` (accuracy: the
  best cut, see ``pipeline.studies.jet_images.metrics``), ``autoencoder_roc``, ``reconstruction``.
* ``evaluate_denoising``: the denoising autoencoder on the noisy test images (the noise
  of the test split, the same in every run): MSE and PSNR against the clean images, and
  the CNN tagger's AUC on the clean, noisy and denoised images. ``denoising.csv`` and
  ``.md``, ``denoising`` (examples).

Figures are PNG and PDF. Every evaluated model gets an MLflow run
``jet_images.evaluate.<model>`` tagged with its training run's id.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.colors import LogNorm

from pipeline.io.hdf5 import data_set_of
from pipeline.io.outputs import pyplot, save_figure, write_csv, write_text
from pipeline.ml.checkpoints import check_checkpoint, check_checkpoint_names, checkpoint_run_id, load_module
from pipeline.ml.roc import efficiency_curve
from pipeline.ml.threads import use_evaluation_threads
from pipeline.ml.tracking import log_run, run_name, run_tags
from pipeline.studies.jet_images.data import ROWS_PER_READ, iterate_images, normalise_images
from pipeline.studies.jet_images.formats import IMAGE_CLASSES
from pipeline.studies.jet_images.methods import AUTOENCODERS, METHODS, TAGGERS
from pipeline.studies.jet_images.metrics import METRIC_KEYS, mse, psnr, tagger_metrics
from pipeline.studies.jet_images.models import ImageAutoencoder, ImageTagger, input_scale_for
from pipeline.studies.jet_images.train import model_identity, trained_on

log = logging.getLogger(__name__)

COLUMNS = ("model", *METRIC_KEYS)
DENOISING_COLUMNS = ("images", "mse", "psnr", "cnn_auc")
#: Images passed through a network at once (bounds the memory of the activations).
INFERENCE_BATCH = 512
#: Test jets per class in the reconstruction figure, and jets in the denoising figure.
EXAMPLES = 2
DENOISING_EXAMPLES = 3
#: An anomaly score whose AUC is below 0.5 + CHANCE_MARGIN counts as failing its task.
CHANCE_MARGIN = 0.05

#: The landscape paper's (Kasieczka et al., SciPost Phys. 7, 014) numbers on their own
#: top-tagging sample: name, AUC, accuracy, 1/eps_B at eps_S = 0.3 (0.5 is not quoted).
LANDSCAPE = {"mlp": ("TopoDNN (dense network)", 0.972, 0.916, 295.0),
             "cnn": ("CNN", 0.981, 0.930, 914.0)}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load(config: Mapping, model_class, path: str | Path, name: str, **expected):
    """A trained model in eval mode; ValueError if it is not ``name`` built with ``config``'s
    settings (``model_identity``) or its hyperparameters differ from ``expected``."""
    model = load_module(model_class, path, model_identity(config, name))
    wrong = {key: model.hparams.get(key) for key, value in expected.items() if model.hparams.get(key) != value}
    if wrong:
        raise ValueError(f"{path}: given as the {name} checkpoint, but its {model_class.__name__} was built with "
                         f"{wrong}; the {name} of this config has {expected}")
    return model.to(_device()).eval()


def _study_settings(study: Mapping) -> dict:
    """The hyperparameters every model evaluated with this config must have been built with."""
    return {"pixels": study["pixels"], "input_scale": input_scale_for(study["pixels"], study["normalise"])}


def _both_classes(labels: Sequence[np.ndarray], test: str | Path) -> np.ndarray:
    """The test labels (n,) joined; ValueError unless both classes are there."""
    labels = np.concatenate(labels)
    counts = np.bincount(labels.astype(np.int64), minlength=2)
    if not counts.all():
        raise ValueError(f"{test}: the test file needs jets of both classes, found {dict(zip(IMAGE_CLASSES, counts))}")
    return labels


def _apply(function, images: np.ndarray) -> np.ndarray:
    """``function`` (a network's method) on images (n, H, W) in batches of INFERENCE_BATCH, as numpy."""
    device = _device()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), INFERENCE_BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + INFERENCE_BATCH])).to(device)
            outputs.append(function(batch).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros(0, np.float32)


def _probabilities(tagger, images: np.ndarray) -> np.ndarray:
    """P(top) (n,) of a tagger on model-input images (n, H, W)."""
    return _apply(lambda x: torch.sigmoid(tagger(x)), images)


def _data_line(test: str | Path) -> str:
    """The first line of every table: what the test jets were made from."""
    return f"Data: {data_set_of(test) or 'not recorded'}.\n\n"


def _table(rows: Sequence[Mapping], first: str) -> list[str]:
    """Markdown rows of the metrics (AUC and accuracy to 3 decimals, rejections to 1)."""
    lines = [f"| {first} | AUC | accuracy | 1/eps_B @ eps_S=0.3 | 1/eps_B @ eps_S=0.5 |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['auc']:.3f} | {row['accuracy']:.3f} | "
                     f"{row['rejection_at_0.3']:.1f} | {row['rejection_at_0.5']:.1f} |")
    return lines


def _log_runs(config: Mapping, test: str | Path, checkpoints: Mapping[str, str | Path],
              metrics: Mapping[str, Mapping[str, float]], artifacts: Sequence[Path],
              extra_tags: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """One MLflow run ``jet_images.evaluate.<model>`` per entry of ``metrics``, tagged with the
    model's training run id, with ``artifacts`` (the tables) attached."""
    stage = {key: config[key] for key in ("seed", "jet_images")}
    for model, values in metrics.items():
        tags = {**run_tags(stage, [test, checkpoints[model]], "jet_images", "evaluate", model),
                "training.run_id": checkpoint_run_id(checkpoints[model]), **(extra_tags or {}).get(model, {})}
        log_run(config, run_name("jet_images", "evaluate", model), tags, values, artifacts, stage=stage)


def _plot_rejection(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, xlabel: str,
                    markers: Mapping[str, tuple[float, float]] | None = None) -> None:
    """Background rejection 1/eps_B (log) against signal efficiency, one curve per
    {label: (signal scores, background scores)}; ``markers`` {label: (eps_S, 1/eps_B)}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 7))
    for label, (signal, background) in curves.items():
        eff_s, eff_b = efficiency_curve(signal, background)
        passing = eff_b > 0
        ax.plot(eff_s[passing], 1.0 / eff_b[passing], label=label)
    grid = np.linspace(0.01, 1.0, 100)
    ax.plot(grid, 1.0 / grid, color="grey", linestyle=":", label="random")
    for label, (eff, rejection) in (markers or {}).items():
        ax.plot([eff], [rejection], marker="*", markersize=14, linestyle="none", label=label)
    ax.set_yscale("log")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(r"background rejection $1/\varepsilon_B$")
    ax.legend(fontsize=12)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _plot_grid(images: Sequence[Sequence[np.ndarray]], titles: Sequence[Sequence[str]], extent: float,
               path: Path) -> None:
    """Rows of images (pixels, pixels) on a log colour scale, the same in a row (set by
    its first image, so a reconstruction compares with its input); pixels <= 0 blank."""
    plt = pyplot()
    rows, cols = len(images), len(images[0])
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4.6 * rows), squeeze=False)
    for r in range(rows):
        positive = images[r][0][images[r][0] > 0]
        norm = LogNorm(vmin=max(positive.min(), positive.max() * 1e-4), vmax=positive.max()) if positive.size else None
        for c in range(cols):
            image, ax = images[r][c], axes[r, c]
            # imshow draws axis 0 downwards: transpose so delta eta runs along x, delta phi up y.
            shown = ax.imshow(np.where(image.T > 0, image.T, np.nan), origin="lower", norm=norm, cmap="viridis",
                              extent=[-extent / 2, extent / 2] * 2)
            ax.set_title(titles[r][c], fontsize=12)
            ax.set_xlabel("Δη (rotated)", fontsize=12)
            ax.set_ylabel("Δφ (rotated)", fontsize=12)
            fig.colorbar(shown, ax=ax)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def evaluate_jet_images(config: Mapping, test: str | Path, checkpoints: Mapping[str, str | Path],
                        output_dir: str | Path) -> dict[str, list[dict]]:
    """The study's evaluation: ``checkpoints`` {method: path}, exactly one per METHODS,
    each checked (``model_identity``) before any of the three evaluations (taggers,
    autoencoders, denoising) starts. Returns their rows by evaluation."""
    check_checkpoint_names(checkpoints, METHODS, "jet_images evaluate")
    use_evaluation_threads(config)
    for name in METHODS:
        check_checkpoint(checkpoints[name], model_identity(config, name))
    return {"taggers": evaluate_taggers(config, test, {n: checkpoints[n] for n in TAGGERS}, output_dir),
            "autoencoders": evaluate_autoencoders(config, test, {n: checkpoints[n] for n in AUTOENCODERS}, output_dir),
            "denoising": evaluate_denoising(config, test, {n: checkpoints[n] for n in ("denoising_autoencoder", "cnn")},
                                            output_dir)}


def evaluate_taggers(config: Mapping, test: str | Path, checkpoints: Mapping[str, str | Path],
                     output_dir: str | Path) -> list[dict]:
    """Evaluate the MLP and CNN taggers (``checkpoints`` {"mlp": path, "cnn": path}) on
    the test jet images; write taggers.csv, taggers.md and the ROC figure; log to MLflow.
    Returns the rows of taggers.csv."""
    check_checkpoint_names(checkpoints, TAGGERS, "evaluate_taggers")
    study = config["jet_images"]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    models = {name: _load(config, ImageTagger, checkpoints[name], name, backbone=name, **_study_settings(study))
              for name in TAGGERS}
    scores: dict[str, list[np.ndarray]] = {name: [] for name in TAGGERS}
    labels = []
    for chunk in iterate_images(test, study["pixels"], study["normalise"]):
        labels.append(chunk["label"])
        for name, model in models.items():
            scores[name].append(_probabilities(model, chunk["image"]))
    labels = _both_classes(labels, test)
    probabilities = {name: np.concatenate(parts) for name, parts in scores.items()}
    rows = [{"model": name, **tagger_metrics(labels, probabilities[name], threshold=0.5)} for name in TAGGERS]

    write_csv(output_dir / "taggers.csv", COLUMNS, rows)
    md = _table(rows, "model")
    for name, (theirs, auc, accuracy, rejection) in LANDSCAPE.items():
        md.append(f"| {theirs} (landscape paper, theirs, on their data) | {auc:.3f} | {accuracy:.3f} | "
                  f"{rejection:.0f} | - |")
    note = (f"\nOurs: {len(labels)} test jets ({int(labels.sum())} top, {int(len(labels) - labels.sum())} QCD), "
            f"{study['pixels']} x {study['pixels']} images"
            + (" divided by their pixel sum" if study["normalise"] else "")
            + ". Accuracy at P(top) = 0.5; background (QCD) rejection 1/eps_B at top-tagging efficiency "
            "eps_S = 0.3 and 0.5. Landscape-paper rows: Kasieczka et al., SciPost Phys. 7 (2019) 014, "
            "on their Delphes top-tagging sample (theirs, not reproduced here; 1/eps_B at eps_S = 0.5 not quoted).\n")
    write_text(output_dir / "taggers.md", _data_line(test) + "\n".join(md) + "\n" + note)
    _plot_rejection({name: (probabilities[name][labels == 1], probabilities[name][labels == 0]) for name in TAGGERS},
                    output_dir / "roc", r"top-tagging efficiency $\varepsilon_S$",
                    {f"{LANDSCAPE[name][0]} (theirs)": (0.3, LANDSCAPE[name][3]) for name in TAGGERS})
    _log_runs(config, test, checkpoints, {row["model"]: {k: row[k] for k in METRIC_KEYS} for row in rows},
              [output_dir / "taggers.csv"])
    log.info("evaluated the image taggers on %d jets: %s", len(labels), rows)
    return rows


def evaluate_autoencoders(config: Mapping, test: str | Path, checkpoints: Mapping[str, str | Path],
                          output_dir: str | Path) -> list[dict]:
    """Evaluate the reconstruction error of the autoencoders as an anomaly score
    (``checkpoints`` {"autoencoder": trained on QCD, "autoencoder_inverse": trained on
    top}); the anomaly, the signal of the metrics, is the class the model did not see.
    Writes autoencoder.csv, autoencoder.md, autoencoder_roc and reconstruction; logs
    to MLflow. Returns the rows of autoencoder.csv."""
    check_checkpoint_names(checkpoints, AUTOENCODERS, "evaluate_autoencoders")
    study = config["jet_images"]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    models = {name: _load(config, ImageAutoencoder, checkpoints[name], name, trained_on=trained_on(name),
                          denoising=False, normalised=study["normalise"], **_study_settings(study))
              for name in AUTOENCODERS}
    scores: dict[str, list[np.ndarray]] = {name: [] for name in AUTOENCODERS}
    labels, examples = [], {0: [], 1: []}
    for chunk in iterate_images(test, study["pixels"], study["normalise"]):
        labels.append(chunk["label"])
        for name, model in models.items():
            scores[name].append(_apply(model.reconstruction_error, chunk["image"]))
        for label in examples:
            examples[label].extend(chunk["image"][chunk["label"] == label][: EXAMPLES - len(examples[label])])
    labels = _both_classes(labels, test).astype(np.int64)
    errors = {name: np.concatenate(parts) for name, parts in scores.items()}
    # The anomaly (signal) is the class the model was not trained on.
    anomaly = {name: 1 - IMAGE_CLASSES.index(trained_on(name)) for name in AUTOENCODERS}
    rows = [{"model": name, **tagger_metrics((labels == anomaly[name]).astype(np.int64), errors[name],
                                             threshold=None)} for name in AUTOENCODERS]

    write_csv(output_dir / "autoencoder.csv", COLUMNS, rows)
    direct, inverse = rows[0]["auc"], rows[1]["auc"]
    fails = inverse < 0.5 + CHANCE_MARGIN
    note = (f"\nAnomaly score: the reconstruction error (mean squared error per pixel) on {len(labels)} test jets. "
            "`autoencoder`: trained on QCD, top jets are the anomaly (signal); `autoencoder_inverse`: trained on "
            "top, QCD jets are the anomaly. Accuracy: of the best cut on the score (chosen on the test set, an "
            "upper bound); rejection of the non-anomalous class at anomaly efficiency 0.3 and 0.5.\n\n"
            f"The autoencoder trained on QCD {'flags' if direct >= 0.5 + CHANCE_MARGIN else 'does not flag'} top "
            f"jets as anomalous (AUC {direct:.3f}). "
            f"The inverse task {'fails' if fails else 'does not fail'} here: AUC {inverse:.3f} "
            f"({'near or below' if fails else 'clearly above'} 0.5, the margin being {CHANCE_MARGIN}), "
            + ("as Finke et al. (JHEP 06 (2021) 161) found: the simpler QCD images are reconstructed well by an "
               "autoencoder that never saw them.\n" if fails else
               "unlike Finke et al. (JHEP 06 (2021) 161), who found that QCD is not flagged as anomalous by an "
               "autoencoder trained on top jets.\n"))
    table = "\n".join(_table(rows, "model (trained on)"))
    write_text(output_dir / "autoencoder.md", _data_line(test) + table + "\n" + note)
    curves = {f"{name} (anomaly: {IMAGE_CLASSES[anomaly[name]]})":
              (errors[name][labels == anomaly[name]], errors[name][labels != anomaly[name]]) for name in AUTOENCODERS}
    _plot_rejection(curves, output_dir / "autoencoder_roc", r"anomaly efficiency $\varepsilon_S$")

    shown = [image for label in (0, 1) for image in examples[label]]
    classes = [IMAGE_CLASSES[label] for label in (0, 1) for _ in examples[label]]
    reconstructions = {name: _apply(model, np.stack(shown)) for name, model in models.items()}
    grid = [[image, *(reconstructions[name][k] for name in AUTOENCODERS)] for k, image in enumerate(shown)]
    titles = [[f"{cls} jet: input",
               *(f"{name} (trained on {trained_on(name)})\nMSE {mse(image[None], reconstructions[name][k][None])[0]:.2g}"
                 for name in AUTOENCODERS)] for k, (image, cls) in enumerate(zip(shown, classes))]
    _plot_grid(grid, titles, study["pixels"] * study["pixel_size"], output_dir / "reconstruction")
    _log_runs(config, test, checkpoints, {row["model"]: {k: row[k] for k in METRIC_KEYS} for row in rows},
              [output_dir / "autoencoder.csv"],
              {name: {"trained_on": trained_on(name), "anomaly": IMAGE_CLASSES[anomaly[name]]} for name in AUTOENCODERS})
    log.info("evaluated the autoencoders on %d jets: %s", len(labels), rows)
    return rows


def evaluate_denoising(config: Mapping, test: str | Path, checkpoints: Mapping[str, str | Path],
                       output_dir: str | Path) -> list[dict]:
    """Evaluate the denoising autoencoder (``checkpoints`` {"denoising_autoencoder": path,
    "cnn": path}) on the test images with the test split's noise: MSE and PSNR of the
    noisy and denoised images against the clean ones (model-input units, i.e. normalised
    images when jet_images.normalise), and the CNN tagger's AUC on each version. Writes
    denoising.csv, denoising.md and the example figure; logs the run of the denoiser to
    MLflow (tagged with the CNN's training run). Returns the rows of denoising.csv."""
    check_checkpoint_names(checkpoints, ("denoising_autoencoder", "cnn"), "evaluate_denoising")
    study = config["jet_images"]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    denoiser = _load(config, ImageAutoencoder, checkpoints["denoising_autoencoder"], "denoising_autoencoder",
                     denoising=True, normalised=study["normalise"], **_study_settings(study))
    cnn = _load(config, ImageTagger, checkpoints["cnn"], "cnn", backbone="cnn", **_study_settings(study))
    versions = ("clean", "noisy", "denoised")
    sums = {v: {"mse": 0.0, "psnr": 0.0} for v in versions}
    scores: dict[str, list[np.ndarray]] = {v: [] for v in versions}
    labels, examples = [], []
    for chunk in iterate_images(test, study["pixels"], study["normalise"], noise=study["denoising"],
                                seed=config["seed"], split="test", rows=ROWS_PER_READ):
        denoised = _apply(denoiser, chunk["image"])
        images = {"clean": chunk["target"], "noisy": chunk["image"],
                  # The tagger's input convention: the denoiser's output normalised like any image.
                  "denoised": normalise_images(denoised) if study["normalise"] else denoised}
        for version, batch in images.items():
            sums[version]["mse"] += float(mse(chunk["target"], batch).sum())
            sums[version]["psnr"] += float(psnr(chunk["target"], batch).sum())
            scores[version].append(_probabilities(cnn, batch))
        labels.append(chunk["label"])
        examples.extend([images[v][k] for v in versions] for k in range(min(DENOISING_EXAMPLES - len(examples),
                                                                                len(denoised))))
    labels = _both_classes(labels, test)
    rows = [{"images": v, "mse": sums[v]["mse"] / len(labels), "psnr": sums[v]["psnr"] / len(labels),
             "cnn_auc": tagger_metrics(labels, np.concatenate(scores[v]))["auc"]} for v in versions]

    write_csv(output_dir / "denoising.csv", DENOISING_COLUMNS, rows)
    noise = study["denoising"]
    units = "normalised images (each sums to 1)" if study["normalise"] else "GeV"
    md = ["| images | MSE per pixel | PSNR [dB] | CNN AUC |", "| --- | ---: | ---: | ---: |"]
    md += [f"| {row['images']} | {row['mse']:.3g} | {row['psnr']:.2f} | {row['cnn_auc']:.3f} |" for row in rows]
    note = (f"\n{len(labels)} test jets. Noise added to the GeV images before normalising: Gaussian, "
            f"{noise['noise_sigma']} GeV per pixel, plus Poisson({noise['pileup_deposits']}) soft deposits per image "
            f"at random pixels with exponential E_T of mean {noise['pileup_energy']} GeV (the same noise in every run). "
            f"MSE per pixel against the clean images, in {units} squared; PSNR = 10 log10(peak^2 / MSE) per image, "
            "peak = the clean image's largest pixel, averaged over the images. CNN AUC: the CNN tagger, trained on "
            "clean images, on each version of the test images.\n")
    write_text(output_dir / "denoising.md", _data_line(test) + "\n".join(md) + "\n" + note)
    _plot_grid(examples, [[f"jet {k + 1}: {v}" for v in versions] for k in range(len(examples))],
               study["pixels"] * study["pixel_size"], output_dir / "denoising")
    metrics = {f"{key}_{row['images']}": row[key] for row in rows for key in DENOISING_COLUMNS[1:]}
    _log_runs(config, test, checkpoints, {"denoising_autoencoder": metrics}, [output_dir / "denoising.csv"],
              {"denoising_autoencoder": {"cnn.run_id": checkpoint_run_id(checkpoints["cnn"])}})
    log.info("evaluated the denoising autoencoder on %d jets: %s", len(labels), rows)
    return rows
