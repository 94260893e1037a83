"""Evaluation of every vertex finder on the same test jets, with the paper's metrics.

Writes ``metrics.csv`` (one row per method and flavour b, c, light, all), ``table.md`` and
``table.tex`` (with the paper's F1 beside ours, labelled as theirs), the F1-vs-track-count
figure (PNG and PDF) and ``predictions.h5`` (every method's per-jet partition with the
truth, so anyone can recompute the metrics). The ``all`` row is the mean of the b, c and
light rows, so it does not depend on the sample's flavour mix.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from pipeline.config import config_hash
from pipeline.io.hdf5 import RaggedWriter, data_set_of, provenance_attrs
from pipeline.io.outputs import pyplot, save_figure, write_csv, write_text
from pipeline.ml.checkpoints import check_checkpoint_names, load_module
from pipeline.ml.threads import use_evaluation_threads
from pipeline.ml.tracking import log_run, run_name, run_tags
from pipeline.studies.vertexing.classical import CLASSICAL, classical_partition
from pipeline.studies.vertexing.data import TrackGraphBatches
from pipeline.studies.vertexing.formats import VERTEX_PREDICTIONS
from pipeline.studies.vertexing.methods import LEARNED, METHODS, TRIVIAL_PARTITIONS
from pipeline.studies.vertexing.metrics import METRICS, jet_metrics
from pipeline.studies.vertexing.models import VertexFinder
from pipeline.studies.vertexing.train import vertex_finder_identity

log = logging.getLogger(__name__)

TRIVIAL = TRIVIAL_PARTITIONS
FLAVOURS = {"b": 5, "c": 4, "light": 0}
COLUMNS = ("method", "flavour", "n_jets", *METRICS)

#: Vertex-finding F1 per flavour (b, c, light) in Shlomi et al., EPJC 81 (2021) 540 [C3]:
#: their data (Delphes, 14 TeV), quoted for comparison, not reproduced.
PAPER_F1 = {"avr": (0.56, 0.70, 0.97), "track_pair": (0.62, 0.74, 0.96),
            "rnn": (0.59, 0.71, 0.93), "set2graph": (0.66, 0.75, 0.97)}


def load_finders(config: Mapping, checkpoints: Mapping[str, str | Path]) -> dict:
    """The learned finders in eval mode, {method: VertexFinder}; ValueError (CheckpointError)
    naming the file if the names are not LEARNED's, or a checkpoint is another method's or
    was built with other settings than ``config``'s (``vertex_finder_identity``)."""
    check_checkpoint_names(checkpoints, LEARNED, "vertexing evaluate")
    return {m: load_module(VertexFinder, p, vertex_finder_identity(config, m)).eval() for m, p in checkpoints.items()}


def predict(test_path: str | Path, models: Mapping[str, VertexFinder], batch_size: int = 512,
            classical: bool = True) -> dict:
    """Every method's labels on the test file: {"truth", method..., "offsets", "flavour", ...};
    ``models`` the learned finders (``load_finders``; none: the classical and trivial ones only);
    ``classical``: whether the classical finders (the costly AVR fits) run too."""
    batches = TrackGraphBatches(test_path, batch_size)
    mean, std = batches.feature_mean, batches.feature_std
    finders = CLASSICAL if classical else {}
    out = {name: [] for name in ("truth", *finders, *models, *TRIVIAL, "n_tracks", "flavour", "jet_index")}
    with torch.no_grad():
        for index in range(len(batches)):
            batch = batches[index]
            mask = batch["mask"].numpy()
            labels = {
                **{finder: classical_partition(finder, batch["x"].numpy(), mask, mean, std) for finder in finders},
                "single_vertex": np.where(mask, 0, -1),
                "all_singletons": np.where(mask, np.arange(mask.shape[1]), -1),
            }
            for method, model in models.items():
                labels[method] = model.partition(model(batch["x"], batch["mask"]), batch["mask"])
            out["truth"].append(batch["vertex"].numpy()[mask])
            for method, value in labels.items():
                out[method].append(value[mask])
            out["n_tracks"].append(batch["n_tracks"].numpy())
            out["flavour"].append(batch["flavour"].numpy())
            out["jet_index"].append(batch["jet_index"].numpy())
    result = {k: np.concatenate(v) for k, v in out.items()}
    result["offsets"] = np.concatenate([[0], np.cumsum(result["n_tracks"])])
    return result


def summarise(predictions: Mapping[str, np.ndarray]) -> tuple[list[dict], dict[str, dict]]:
    """Rows of metrics.csv and the per-jet metrics of every method in ``predictions``."""
    rows, per_jet = [], {}
    flavour = predictions["flavour"]
    for method in (m for m in (*METHODS, *TRIVIAL) if m in predictions):
        metrics = jet_metrics(predictions["truth"], predictions[method], predictions["offsets"])
        per_jet[method] = metrics
        by_flavour = []
        for name, code in FLAVOURS.items():
            scored = metrics["scored"] & (flavour == code)
            row = {"method": method, "flavour": name, "n_jets": int(scored.sum())}
            row.update({m: float(metrics[m][scored].mean()) if scored.any() else float("nan") for m in METRICS})
            rows.append(row)
            by_flavour.append(row)
        mean_row = {"method": method, "flavour": "all", "n_jets": sum(r["n_jets"] for r in by_flavour)}
        mean_row.update({m: float(np.mean([r[m] for r in by_flavour])) for m in METRICS})
        rows.append(mean_row)
    return rows, per_jet


def write_tables(rows: list[dict], output_dir: Path, data: str) -> None:
    """metrics.csv, table.md and table.tex; ``data``: what the test jets were made from."""
    write_csv(output_dir / "metrics.csv", COLUMNS, rows, floats=".4f")

    def paper(row):
        values = PAPER_F1.get(row["method"])
        if values is None or row["flavour"] == "all":
            return "-"
        return f"{values[list(FLAVOURS).index(row['flavour'])]:.2f}"

    md = ["| method | flavour | jets | F1 | precision | recall | RI | ARI | ARI (one-sided) | F1, paper (theirs) |",
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    tex = [r"\begin{tabular}{llrrrrrrrr}", r"\hline",
           r"Method & Flavour & Jets & F1 & Precision & Recall & RI & ARI & ARI$_\mathrm{1s}$ & F1 (paper) \\", r"\hline"]
    for row in rows:
        values = [f"{row[m]:.3f}" for m in METRICS]
        md.append(f"| {row['method']} | {row['flavour']} | {row['n_jets']} | " + " | ".join(values) + f" | {paper(row)} |")
        tex.append(f"{row['method'].replace('_', chr(92) + '_')} & {row['flavour']} & {row['n_jets']} & "
                   + " & ".join(values) + f" & {paper(row)} \\\\")
    tex += [r"\hline", r"\end{tabular}"]
    note = ("\nF1, paper: Shlomi et al., EPJC 81 (2021) 540, on their Delphes sample (theirs, not reproduced here). "
            "The `all` row is the mean of the b, c and light rows.\n")
    write_text(output_dir / "table.md", f"Data: {data}.\n\n" + "\n".join(md) + "\n" + note)
    write_text(output_dir / "table.tex", f"% data: {data}\n" + "\n".join(tex) + "\n")


def plot_f1_vs_tracks(predictions: Mapping[str, np.ndarray], per_jet: Mapping[str, dict], output_dir: Path) -> None:
    """Mean F1 against the number of tracks, one panel per flavour, one line per method."""
    plt = pyplot()
    n_tracks, flavour = predictions["n_tracks"], predictions["flavour"]
    counts = np.arange(2, int(n_tracks.max(initial=2)) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(18, 6), sharey=True)
    for ax, (name, code) in zip(axes, FLAVOURS.items()):
        for method in (*METHODS, "single_vertex"):
            f1 = per_jet[method]["f1"]
            means = [f1[(flavour == code) & (n_tracks == n)].mean() if ((flavour == code) & (n_tracks == n)).any()
                     else np.nan for n in counts]
            ax.plot(counts, means, marker="o", markersize=4, label=method)
        ax.set_title(f"{name} jets", fontsize=16)
        ax.set_xlabel("Number of tracks")
    axes[0].set_ylabel("Mean F1 (same-vertex pairs)")
    axes[0].set_ylim(0, 1.05)
    axes[-1].legend(fontsize=12)
    fig.tight_layout()
    save_figure(fig, output_dir / "f1_vs_tracks")
    plt.close(fig)


def write_predictions(predictions: Mapping[str, np.ndarray], path: Path, attrs: Mapping) -> None:
    with RaggedWriter(path, VERTEX_PREDICTIONS, attrs) as writer:
        writer.append(
            {"jets": {"flavour": predictions["flavour"], "n_tracks": predictions["n_tracks"],
                      "jet_index": predictions["jet_index"]},
             "tracks": {name: predictions[name] for name in ("truth", *METHODS, *TRIVIAL)}},
            {"tracks": predictions["n_tracks"]},
        )


def evaluate_vertexing(config: Mapping, test_path: str | Path, checkpoints: Mapping[str, str | Path],
                       output_dir: str | Path) -> list[dict]:
    """Evaluate all methods on the test file; write the tables, figure and predictions."""
    models = load_finders(config, checkpoints)  # before any output: a wrong checkpoint stops here
    use_evaluation_threads(config)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictions = predict(test_path, models)
    rows, per_jet = summarise(predictions)
    write_tables(rows, output_dir, data_set_of(test_path) or "not recorded")
    plot_f1_vs_tracks(predictions, per_jet, output_dir)
    stage = {key: config[key] for key in ("seed", "vertexing")}
    write_predictions(predictions, output_dir / "predictions.h5",
                      {**provenance_attrs(stage, config_hash(stage), config["seed"]), "test_file": str(test_path)})
    tags = run_tags(stage, [test_path, *checkpoints.values()], "vertexing", "evaluate", "")  # checksums once
    for method in (*METHODS, *TRIVIAL):
        log_run(config, run_name("vertexing", "evaluate", method), {**tags, "method": method},
                {f"{r['flavour']}_{m}": r[m] for r in rows if r["method"] == method for m in METRICS},
                [output_dir / "metrics.csv"], stage=stage, checkpoint=checkpoints.get(method))
    log.info("evaluated %d methods on %d jets", len(METHODS) + len(TRIVIAL), len(predictions["n_tracks"]))
    return rows
