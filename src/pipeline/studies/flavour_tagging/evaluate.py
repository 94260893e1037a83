"""Evaluation of the flavour tagger trained on each vertex finder's edges: the lecture's table.

Writes ``metrics.csv`` (one row per method, each metric the mean over the method's
training replicas), ``metrics_replicas.csv`` (every replica), ``table.md`` laid out like
the lecture's table with the lecture's numbers in rows of their own, the b-tagging ROC
figure (light and c rejection against b-jet efficiency, one curve per method) and a
confusion-matrix figure per method, all as PNG and PDF. Accuracy and F1 are on the
flavour-balanced test sample (each jet weighted by 1 / its flavour's count); per-class accuracies and
rejections do not depend on the balance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from pipeline.io.hdf5 import data_set_of
from pipeline.io.outputs import pyplot, save_figure, write_csv, write_text
from pipeline.ml.checkpoints import check_checkpoint, check_checkpoint_names, checkpoint_run_id, load_module
from pipeline.ml.roc import rejection_at
from pipeline.ml.threads import use_evaluation_threads
from pipeline.ml.tracking import log_run, run_name, run_tags
from pipeline.seeds import derive_seed
from pipeline.studies.flavour_tagging.data import CLASSES, FlavourBatches
from pipeline.studies.flavour_tagging.methods import METHODS
from pipeline.studies.flavour_tagging.metrics import (
    WORKING_POINTS,
    b_discriminant,
    bootstrap_spread,
    classification_metrics,
)
from pipeline.studies.flavour_tagging.models import FlavourTagger
from pipeline.studies.flavour_tagging.train import edges_run_id, tagger_identity

log = logging.getLogger(__name__)

COLUMNS = ("method", "accuracy", "f1_macro", "acc_b", "acc_c", "acc_light",
           "light_rejection_b70", "c_rejection_b70", "light_rejection_b77", "c_rejection_b77")

#: The lecture's table (Accuracy, F1, b, c, light) for each vertex finder; theirs, on the
#: Delphes sample of Shlomi et al., EPJC 81 (2021) 540, quoted for comparison.
LECTURE = {"avr": (0.50, 0.49, 0.62, 0.44, 0.40), "baseline": (0.57, 0.56, 0.67, 0.40, 0.60),
           "track_pair": (0.56, 0.57, 0.65, 0.48, 0.57), "rnn": (0.62, 0.60, 0.74, 0.37, 0.69),
           "set2graph": (0.63, 0.62, 0.72, 0.44, 0.69)}


def predict(checkpoint: str | Path, graphs: str | Path, edges: str | Path | None, expected: Mapping,
            batch_size: int = 1024) -> dict:
    """Class probabilities (n, 3) and labels (n,) of a tagger on a test file; ``expected``
    what the checkpoint must be (``tagger_identity``)."""
    model = load_module(FlavourTagger, checkpoint, expected).eval()
    batches = FlavourBatches(graphs, edges, batch_size)
    probabilities, labels = [], []
    with torch.no_grad():
        for index in range(len(batches)):
            graph = batches[index]
            probabilities.append(torch.softmax(model(graph), dim=-1).numpy())
            labels.append(graph["label"].numpy())
    return {"probabilities": np.concatenate(probabilities), "labels": np.concatenate(labels)}


def method_metrics(prediction: Mapping[str, np.ndarray], charm_fraction: float) -> dict[str, float]:
    """A row of metrics.csv (without the method's name)."""
    labels, probabilities = prediction["labels"], prediction["probabilities"]
    row = classification_metrics(labels, probabilities)
    d_b = b_discriminant(probabilities, charm_fraction)
    for name, k in (("light", 2), ("c", 1)):
        rejections = rejection_at(d_b[labels == 0], d_b[labels == k], WORKING_POINTS)
        for eff, rejection in zip(WORKING_POINTS, rejections):
            row[f"{name}_rejection_b{round(100 * eff)}"] = rejection
    return row


def replica_summary(replica_rows: Mapping[str, Sequence[Mapping[str, float]]]) -> tuple[list[dict], dict]:
    """The table's rows, each metric the mean over a method's training replicas, and
    {method: {metric: standard deviation over replicas}} (empty with one replica).
    ``gain`` in a row: its accuracy minus no_vertex's, replica by replica (same seed), averaged."""
    rows, seed_spread = [], {}
    control = np.array([r["accuracy"] for r in replica_rows["no_vertex"]])
    for method, replicas in replica_rows.items():
        values = {k: np.array([r[k] for r in replicas]) for k in COLUMNS[1:]}
        gain = values["accuracy"] - control
        rows.append({"method": method, **{k: float(np.mean(v)) for k, v in values.items()},
                     "gain": float(np.mean(gain))})
        if len(replicas) > 1:
            seed_spread[method] = {k: float(np.std(v, ddof=1)) for k, v in [*values.items(), ("gain", gain)]}
    return rows, seed_spread


def write_tables(rows: list[dict], output_dir: Path, spread: Mapping[str, Mapping[str, float]] | None = None,
                 seed_spread: Mapping[str, Mapping[str, float]] | None = None,
                 replica_rows: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
                 data: str = "not recorded") -> None:
    """metrics.csv (one row per method: the mean over its training replicas), table.md
    (ours, then the lecture's rows, labelled as theirs) and, given ``replica_rows``,
    metrics_replicas.csv (every training). ``spread`` {method: {"accuracy": std, "f1_macro":
    std}}: the bootstrap uncertainty; ``seed_spread`` {method: {metric: std}}: the spread
    between trainings with different seeds; ``data``: what the test jets were made from."""
    write_csv(output_dir / "metrics.csv", COLUMNS, rows, floats=".4f")
    if replica_rows is not None:
        write_csv(output_dir / "metrics_replicas.csv", ("method", "replica", *COLUMNS[1:]),
                  ({"method": method, "replica": r, **row} for method, replicas in replica_rows.items()
                   for r, row in enumerate(replicas)), floats=".4f")
    md = ["| method | Accuracy | F1 | b | c | light | light rej. @70% | c rej. @70% | light rej. @77% | c rej. @77% "
          "| Acc. - no_vertex |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        errors, between = (spread or {}).get(row["method"], {}), (seed_spread or {}).get(row["method"], {})

        def cell(key: str, digits: int = 3) -> str:
            text = f"{row[key]:+.{digits}f}" if key == "gain" else f"{row[key]:.{digits}f}"
            if key in errors:
                text += f" ± {errors[key]:.{digits}f}"
            if key in between:
                text += f" ± {between[key]:.{digits}f}"
            return text

        cells = [cell(k) for k in COLUMNS[1:6]] + [cell(k, 1) for k in COLUMNS[6:]]
        md.append("| " + " | ".join([row["method"], *cells, "-" if row["method"] == "no_vertex" else cell("gain")])
                  + " |")
    for method, values in LECTURE.items():
        md.append(f"| {method} (lecture, theirs) | " + " | ".join(f"{v:.2f}" for v in values) + " | - | - | - | - | - |")
    replicas = len(next(iter(replica_rows.values()))) if replica_rows else 1
    note = ("\nOurs: one graph classifier per row, the same seeds and budget, fed the frozen vertex finder's "
            "same-vertex edge scores (`no_vertex`: a constant score). Accuracy and F1 (macro) on the "
            "flavour-balanced test sample; b, c, light: per-class accuracy. Rejections 1/eps at 70% and 77% "
            "b-jet efficiency of the discriminant D_b = ln(p_b / (f_c p_c + (1 - f_c) p_light)). "
            + (f"Every entry is the mean of {replicas} trainings with different seeds (replica r of every row "
               "shares seed r); the last ± is the standard deviation between them. "
               if replicas > 1 else "One training per row (the spread between seeds is not shown). ")
            + "Accuracy and F1: the first ± is the standard deviation over bootstrap resamples of the test jets "
            "(test-set statistics). Acc. - no_vertex: the row's accuracy minus the control's, seed by seed.\n"
            "Lecture rows: the EPJC study's Delphes sample (theirs, not reproduced here).\n")
    write_text(output_dir / "table.md", f"Data: {data}.\n\n" + "\n".join(md) + "\n" + note)


#: b-jet efficiencies at which the ROC figure evaluates every replica's rejection.
ROC_EFFICIENCIES = np.linspace(0.3, 0.99, 139)


def rejection_curve(prediction: Mapping[str, np.ndarray], charm_fraction: float, background: int) -> np.ndarray:
    """Rejection of the ``background`` class (1 = c, 2 = light) at ROC_EFFICIENCIES b-jet efficiency."""
    labels = prediction["labels"]
    d_b = b_discriminant(prediction["probabilities"], charm_fraction)
    return np.array(rejection_at(d_b[labels == 0], d_b[labels == background], ROC_EFFICIENCIES))


def plot_roc(predictions: Mapping[str, Sequence[dict]], charm_fraction: float, output_dir: Path) -> None:
    """Light and c rejection against b-jet efficiency, one curve per method: the geometric
    mean over its training replicas, the band their full range."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(16, 7))
    for method, replicas in predictions.items():
        for ax, background in zip(axes, (2, 1)):
            curves = np.array([rejection_curve(p, charm_fraction, background) for p in replicas])
            curves = np.where(np.isfinite(curves), curves, np.nan)
            line, = ax.plot(ROC_EFFICIENCIES, np.exp(np.nanmean(np.log(curves), axis=0)), label=method,
                            linestyle="--" if method == "no_vertex" else "-")
            if len(replicas) > 1:
                ax.fill_between(ROC_EFFICIENCIES, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0),
                                color=line.get_color(), alpha=0.2, linewidth=0)
    for ax, name in zip(axes, ("light", "c")):
        ax.set_yscale("log")
        ax.set_xlim(0.3, 1.0)
        ax.set_xlabel("b-jet efficiency")
        ax.set_ylabel(f"{name}-jet rejection")
        for eff in WORKING_POINTS:
            ax.axvline(eff, color="grey", linewidth=0.8, linestyle=":")
    axes[0].legend(fontsize=12)
    fig.tight_layout()
    save_figure(fig, output_dir / "roc")
    plt.close(fig)


def plot_confusion(method: str, replicas: Sequence[Mapping[str, np.ndarray]], output_dir: Path) -> None:
    """The confusion matrix normalised per true flavour (rows sum to 1), averaged over replicas."""
    plt = pyplot()

    matrix = np.mean([confusion_matrix(p["labels"], p["probabilities"].argmax(1), labels=range(len(CLASSES)),
                                       normalize="true") for p in replicas], axis=0)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value > 0.5 else "black")
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted flavour")
    ax.set_ylabel("true flavour")
    ax.set_title(f"{method}: fraction of true flavour" + (f" ({len(replicas)} seeds)" if len(replicas) > 1 else ""))
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    save_figure(fig, output_dir / f"confusion_{method}")
    plt.close(fig)


def evaluate_flavour_tagging(config: Mapping, test_graphs: str | Path,
                             checkpoints: Mapping[str, str | Path | Sequence[str | Path]],
                             edges: Mapping[str, str | Path], output_dir: str | Path) -> list[dict]:
    """Evaluate the tagger of every method (``checkpoints``: one per training replica,
    ``flavour_tagging.seeds`` of them; ``edges``: the test edge file of every vertex
    finder) on the test jets; write the tables and figures; log to MLflow. Returns the
    table's rows (means over replicas)."""
    checkpoints = {m: [paths] if isinstance(paths, (str, Path)) else list(paths) for m, paths in checkpoints.items()}
    check_checkpoint_names(checkpoints, METHODS, "flavour_tagging evaluate")
    use_evaluation_threads(config)
    seeds = config["flavour_tagging"]["seeds"]
    wrong = {m: len(paths) for m, paths in checkpoints.items() if len(paths) != seeds}
    if wrong:
        raise ValueError(f"flavour_tagging evaluate: flavour_tagging.seeds is {seeds}, so every method needs {seeds} "
                         f"checkpoints (one per replica); got {wrong}")
    missing = [m for m in METHODS[1:] if m not in edges]
    if missing:
        raise ValueError(f"flavour_tagging evaluate: no test edge scores for {missing}")
    expected = {m: tagger_identity(config, m) for m in METHODS}
    for method, paths in checkpoints.items():  # all of them before the first prediction
        for path in paths:
            check_checkpoint(path, expected[method])
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    charm_fraction = config["flavour_tagging"]["charm_fraction"]
    predictions = {m: [predict(c, test_graphs, edges.get(m), expected[m]) for c in checkpoints[m]] for m in METHODS}
    replica_rows = {m: [method_metrics(p, charm_fraction) for p in replicas] for m, replicas in predictions.items()}
    rows, seed_spread = replica_summary(replica_rows)
    bootstrap_seed = derive_seed(config["seed"], "bootstrap")
    spread = {}
    for method, replicas in predictions.items():
        stds = [bootstrap_spread(p["labels"], p["probabilities"], seed=bootstrap_seed) for p in replicas]
        spread[method] = {k: float(np.mean([s[k] for s in stds])) for k in stds[0]}
    write_tables(rows, output_dir, spread, seed_spread, replica_rows, data_set_of(test_graphs) or "not recorded")
    plot_roc(predictions, charm_fraction, output_dir)
    for method, replicas in predictions.items():
        plot_confusion(method, replicas, output_dir)
    stage = {key: config[key] for key in ("seed", "vertexing", "flavour_tagging")}
    for row in rows:
        method = row["method"]
        inputs = [test_graphs, *checkpoints[method], *([edges[method]] if method in edges else [])]
        tags = {**run_tags(stage, inputs, "flavour_tagging", "evaluate", method), "replicas": str(seeds),
                "vertex_finder": method, "vertex_finder.run_id": edges_run_id(edges[method]) if method in edges else "none",
                "flavour_tagger.run_id": ",".join(checkpoint_run_id(c) for c in checkpoints[method])}
        metrics = {k: v for k, v in row.items() if k != "method"}
        metrics.update({f"{k}_seed_std": v for k, v in seed_spread.get(method, {}).items()})
        log_run(config, run_name("flavour_tagging", "evaluate", method), tags, metrics,
                [output_dir / "metrics.csv", output_dir / f"confusion_{method}.png"], stage=stage)
    log.info("evaluated %d flavour taggers (%d replicas each) on %d jets", len(rows), seeds,
             len(predictions["no_vertex"][0]["labels"]))
    return rows
