"""The learning curves' evaluation: every point's network on its study's test file, the mean
and spread over the seeds, a power law fitted through the means and extrapolated to the
paper's training size, the table and one figure per study, and an MLflow run per method.
For the vertex finders, the finders that learn nothing (AVR, our baseline, one vertex) on the
same test jets, beside the paper's AVR: the data's part of the distance, at any size.

Metrics: the vertex finders' pairwise F1 per flavour (b, c, light; ``vertexing.metrics``,
the EPJC paper's definition), the taggers' AUC and background rejection 1/eps_B at
eps_S = 0.3 (``jet_images.metrics``, the landscape paper's). The fit: 1 - m = a N^-b for F1
and AUC (which cannot pass 1), R = c N^d for a rejection, least squares in log-log over the
points' seed means (N the training jets). A two-parameter law through three to five points
of one decade says where the curve is heading, not where it ends: it cannot see a plateau
(the detector's resolution, the label noise) below the paper's size.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.io.hdf5 import RaggedReader, data_set_of
from pipeline.io.outputs import pyplot, save_figure, write_csv, write_text
from pipeline.ml.checkpoints import load_module
from pipeline.ml.threads import use_evaluation_threads
from pipeline.ml.tracking import log_run, run_name, run_tags
from pipeline.studies.jet_images.evaluate import LANDSCAPE
from pipeline.studies.learning_curves.methods import STUDY_OF
from pipeline.studies.vertexing.classical import CLASSICAL
from pipeline.studies.vertexing.evaluate import FLAVOURS, PAPER_F1, predict
from pipeline.studies.vertexing.evaluate import summarise as vertexing_summary

log = logging.getLogger(__name__)

#: Each study's metrics, in the table's and the figure's order.
METRICS = {"vertexing": ("f1_b", "f1_c", "f1_light"), "jet_images": ("auc", "rejection_at_0.3")}
#: The papers' numbers (theirs, on their Delphes samples), as the studies' own tables quote them:
#: F1 b / c / light of Shlomi et al.; AUC and 1/eps_B at eps_S = 0.3 of Kasieczka et al. (the
#: MLP beside their TopoDNN, the dense network).
PAPER = {**{method: dict(zip(METRICS["vertexing"], PAPER_F1[method])) for method in ("track_pair", "rnn", "set2graph")},
         **{method: {"auc": LANDSCAPE[method][1], "rejection_at_0.3": LANDSCAPE[method][3]}
            for method in ("mlp", "cnn")}}
#: The papers' training jets. Top tagging: the reference data set's 1.211M training jets.
#: Set2Graph: not stated in the paper; 3 x its ~181k test jets, the split of the public files
#: (an assumption, said so in the figure).
PAPER_TRAIN_JETS = {"vertexing": 543_000, "jet_images": 1_211_000}
PAPER_SIZE_NOTE = {"vertexing": "assumed: 3 x their 181k test jets", "jet_images": "their 1.211M training jets"}
COLUMNS = ("study", "method", "fraction", "train_jets", "replica", "metric", "value")


def vertexing_metrics(config: Mapping, method: str, checkpoint: str | Path, test: str | Path,
                      batch_size: int = 512) -> dict[str, float]:
    """{f1_b, f1_c, f1_light}: a vertex finder's mean pairwise F1 per flavour on the test file
    (the vertexing study's own prediction and summary, without its classical finders)."""
    from pipeline.studies.vertexing.models import VertexFinder
    from pipeline.studies.vertexing.train import vertex_finder_identity

    model = load_module(VertexFinder, checkpoint, vertex_finder_identity(config, method)).eval()
    rows, _ = vertexing_summary(predict(test, {method: model}, batch_size, classical=False))
    return {f"f1_{r['flavour']}": r["f1"] for r in rows if r["method"] == method and r["flavour"] in FLAVOURS}


def untrained_references(test: str | Path) -> dict[str, dict[str, float]]:
    """{finder: {f1_b, f1_c, f1_light}} of the finders that learn nothing (the classical AVR
    and our baseline, the single-vertex partition) on the vertex finders' test file: how hard
    the jets are, whatever the training size. Beside the paper's AVR on theirs, it separates
    the data (generator, detector model) from the data size."""
    rows, _ = vertexing_summary(predict(test, {}))
    return {finder: {f"f1_{r['flavour']}": r["f1"] for r in rows if r["method"] == finder and r["flavour"] in FLAVOURS}
            for finder in (*CLASSICAL, "single_vertex")}


#: The Set2Graph training jets' scale as Shlomi et al. (EPJC 81 (2021) 540) state it: jet pT
#: and track pT, mean and standard deviation [GeV]; and the d0 spread of their public files
#: [mm], whose long tails suggest tracks of K0S and Lambda decays.
PAPER_DATA_SCALE = {"jet pT [GeV]": (76.0, 49.0), "track pT [GeV]": (5.2, 7.5), "track d0 [mm]": (None, 14.0)}


def data_scale(train: str | Path) -> dict[str, tuple[float, float]]:
    """{quantity: (mean, standard deviation)} of a track_graphs training file, in
    PAPER_DATA_SCALE's quantities and units, plus tracks and true vertices per jet of each
    flavour: what the jets are like, beside the paper's."""
    from pipeline.studies.vertexing.formats import TRACK_FEATURES, TRACK_GRAPHS

    with RaggedReader(train, TRACK_GRAPHS) as reader:
        jets = reader.read("jets", ["pt", "flavour", "n_tracks"])
        tracks = reader.read("tracks", ["features", "vertex"])
        mean, std = np.asarray(reader.attrs["feature_mean"]), np.asarray(reader.attrs["feature_std"])

    def raw(name):
        k = TRACK_FEATURES.index(name)
        return tracks["features"][:, k].astype(np.float64) * std[k] + mean[k]

    track_pt, d0 = np.exp(raw("log_pt")), raw("d0")
    out = {"jet pT [GeV]": (float(jets["pt"].mean()), float(jets["pt"].std())),
           "track pT [GeV]": (float(track_pt.mean()), float(track_pt.std())),
           "track d0 [mm]": (float(d0.mean()), float(d0.std()))}
    # True vertices per jet: distinct labels, counted as label changes after sorting within jets.
    jet = np.repeat(np.arange(len(jets["n_tracks"])), jets["n_tracks"])
    order = np.lexsort((tracks["vertex"], jet))
    new_vertex = np.ones(len(order), bool)
    new_vertex[1:] = (jet[order][1:] != jet[order][:-1]) | (tracks["vertex"][order][1:] != tracks["vertex"][order][:-1])
    vertices = np.bincount(jet[order][new_vertex], minlength=len(jets["n_tracks"]))
    for name, code in FLAVOURS.items():
        mine = jets["flavour"] == code
        out[f"{name} jets: fraction"] = (float(mine.mean()), float("nan"))
        out[f"{name} jets: tracks"] = (float(jets["n_tracks"][mine].mean()), float(jets["n_tracks"][mine].std()))
        out[f"{name} jets: true vertices"] = (float(vertices[mine].mean()), float(vertices[mine].std()))
    return out


def tagger_point_metrics(config: Mapping, method: str, checkpoint: str | Path, test: str | Path) -> dict[str, float]:
    """{auc, rejection_at_0.3}: an image tagger's on the test file."""
    import torch

    from pipeline.studies.jet_images.data import iterate_images
    from pipeline.studies.jet_images.metrics import tagger_metrics
    from pipeline.studies.jet_images.models import ImageTagger
    from pipeline.studies.jet_images.train import model_identity

    study = config["jet_images"]
    model = load_module(ImageTagger, checkpoint, model_identity(config, method)).eval()
    labels, scores = [], []
    with torch.no_grad():
        for chunk in iterate_images(test, study["pixels"], study["normalise"]):
            labels.append(chunk["label"])
            scores.append(torch.sigmoid(model(torch.from_numpy(chunk["image"]))).numpy())
    metrics = tagger_metrics(np.concatenate(labels), np.concatenate(scores))
    return {"auc": metrics["auc"], "rejection_at_0.3": metrics["rejection_at_0.3"]}


def power_law(train_jets: Sequence[float], values: Sequence[float], metric: str) -> tuple[float, float] | None:
    """(prefactor, exponent) of the fit (module docstring) through ``values`` at ``train_jets``;
    None with fewer than three usable points."""
    x, y = np.asarray(train_jets, np.float64), np.asarray(values, np.float64)
    target = y if metric.startswith("rejection") else 1.0 - y
    usable = np.isfinite(target) & (target > 0)
    if usable.sum() < 3:
        return None
    slope, intercept = np.polyfit(np.log(x[usable]), np.log(target[usable]), 1)
    return float(np.exp(intercept)), float(slope)


def predicted(fit: tuple[float, float], metric: str, train_jets: float) -> float:
    """The fitted law's metric at ``train_jets``."""
    value = fit[0] * train_jets ** fit[1]
    return value if metric.startswith("rejection") else 1.0 - value


def summarise(rows: Sequence[Mapping]) -> list[dict]:
    """Mean and standard deviation over the replicas of every (method, fraction, metric)."""
    keys = sorted({(r["study"], r["method"], r["fraction"], r["train_jets"], r["metric"]) for r in rows},
                  key=lambda k: (k[0], k[1], k[4], k[2]))
    out = []
    for study, method, fraction, train_jets, metric in keys:
        values = np.array([r["value"] for r in rows if (r["method"], r["fraction"], r["metric"]) == (method, fraction,
                                                                                                     metric)])
        out.append({"study": study, "method": method, "fraction": fraction, "train_jets": train_jets,
                    "metric": metric, "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"), "seeds": len(values)})
    return out


def write_table(summary: Sequence[Mapping], data: Mapping[str, str], path: Path,
                references: Mapping[str, Mapping[str, float]] | None = None,
                scale: Mapping[str, tuple[float, float]] | None = None, background_jets: int | None = None) -> None:
    """curve.md: per study, method and metric the seed mean ± spread at each size, the paper's
    number, and the fitted law's value at the paper's size; ``references``: the untrained
    vertex finders' F1 on the same test jets (``untrained_references``), beside the paper's;
    ``scale``: the vertex finders' training jets (``data_scale``), beside the paper's;
    ``background_jets``: the taggers' QCD test jets, whose count limits a rejection's precision."""
    lines = []
    for study in dict.fromkeys(r["study"] for r in summary):
        mine = [r for r in summary if r["study"] == study]
        sizes = sorted({r["train_jets"] for r in mine})
        lines += [f"Data: {data[study]}.", "",
                  "| method | metric | " + " | ".join(f"{n:,} jets" for n in sizes)
                  + f" | paper, theirs ({PAPER_TRAIN_JETS[study]:,} jets) | fit at the paper's size |",
                  "| --- | --- |" + " ---: |" * (len(sizes) + 2)]
        for method in dict.fromkeys(r["method"] for r in mine):
            for metric in METRICS[study]:
                points = sorted((r for r in mine if (r["method"], r["metric"]) == (method, metric)),
                                key=lambda r: r["train_jets"])
                cells = [f"{r['mean']:.3g} ± {r['std']:.2g}" if np.isfinite(r["std"]) else f"{r['mean']:.3g}"
                         for r in points]
                fit = power_law([r["train_jets"] for r in points], [r["mean"] for r in points], metric)
                at_paper = f"{predicted(fit, metric, PAPER_TRAIN_JETS[study]):.3g}" if fit else "-"
                lines.append(f"| {method} | {metric} | " + " | ".join(cells)
                             + f" | {PAPER[method][metric]:g} | {at_paper} |")
        lines.append("")
        if study == "vertexing" and references:
            lines += ["Finders that learn nothing, on the same test jets: how hard the jets are at any training "
                      "size (the paper's AVR on theirs beside ours).", "",
                      "| finder | " + " | ".join(METRICS[study]) + " | paper, theirs |",
                      "| --- |" + " ---: |" * (len(METRICS[study]) + 1)]
            for finder, values in references.items():
                theirs = " / ".join(f"{v:g}" for v in PAPER_F1[finder]) if finder in PAPER_F1 else "-"
                lines.append(f"| {finder} | " + " | ".join(f"{values[m]:.3g}" for m in METRICS[study])
                             + f" | {theirs} |")
            lines.append("")
        if study == "jet_images" and background_jets:
            n = background_jets
            lines += [f"A rejection R on the test file's {n:,} QCD jets rests on the {n:,}/R that pass, a relative "
                      f"statistical uncertainty of about sqrt(R/{n:,}) that the seed spread does not show (one test "
                      f"file): {rejection_precision(300, n):.0%} at R = 300, {rejection_precision(914, n):.0%} at the "
                      "paper's CNN's 914.", ""]
        if study == "vertexing" and scale:
            lines += ["The training jets (the largest point), beside the paper's: mean (standard deviation).", "",
                      "| quantity | ours | paper, theirs |", "| --- | ---: | ---: |"]
            for name, (mean, spread) in scale.items():
                ours = f"{mean:.3g}" + (f" ({spread:.3g})" if np.isfinite(spread) else "")
                paper = PAPER_DATA_SCALE.get(name)
                theirs = "-" if paper is None else (f"{paper[0]:g} ({paper[1]:g})" if paper[0] is not None
                                                    else f"- ({paper[1]:g})")
                lines.append(f"| {name} | {ours} | {theirs} |")
            lines.append("")
    note = ("Mean ± standard deviation over the seeds (the trainings of one point differ in their seed; the points "
            "of one seed in their jets: nested subsets of one training split). Paper rows: theirs, on their "
            "Delphes samples, not reproduced here. Fit: 1 - m = a N^-b (F1, AUC) or R = c N^d (rejection) through "
            "the means, evaluated at the paper's training size: where the curve heads, not a prediction "
            "(docs/learning_curves.md).\n")
    write_text(path, "\n".join(lines) + "\n" + note)


def rejection_precision(rejection: float, background_jets: int) -> float:
    """Relative statistical uncertainty of a background rejection R measured on
    ``background_jets`` jets: the N/R that pass are Poisson, so about sqrt(R / N)."""
    return math.sqrt(rejection / background_jets)


def plot_study(summary: Sequence[Mapping], study: str, path: Path,
               references: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """One panel per metric: each method's seed mean and spread against the training jets (log
    x), its fitted law dashed out to the paper's size, the paper's number there as a star;
    the untrained AVR's F1 on our test jets as a line, the paper's AVR as a black star."""
    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    metrics = METRICS[study]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 5), squeeze=False)
    paper_n = PAPER_TRAIN_JETS[study]
    for ax, metric in zip(axes[0], metrics):
        for index, method in enumerate(dict.fromkeys(r["method"] for r in summary if r["study"] == study)):
            points = sorted((r for r in summary if (r["method"], r["metric"]) == (method, metric)),
                            key=lambda r: r["train_jets"])
            n = np.array([r["train_jets"] for r in points], np.float64)
            mean = np.array([r["mean"] for r in points])
            colour = f"C{index}"
            ax.errorbar(n, mean, yerr=np.nan_to_num([r["std"] for r in points]), marker="o", color=colour,
                        capsize=3, label=method)
            fit = power_law(n, mean, metric)
            if fit:
                grid = np.geomspace(n.min(), paper_n, 50)
                ax.plot(grid, [predicted(fit, metric, g) for g in grid], "--", color=colour, alpha=0.6)
            ax.plot([paper_n], [PAPER[method][metric]], "*", color=colour, markersize=14, markeredgecolor="black")
        if references and "avr" in references:
            ax.axhline(references["avr"][metric], color="black", linestyle="-.", linewidth=1,
                       label="AVR (untrained), our jets")
            ax.plot([paper_n], [PAPER_F1["avr"][METRICS[study].index(metric)]], "*", color="black", markersize=14,
                    label="AVR, paper (theirs)")
        ax.axvline(paper_n, color="grey", linestyle=":", label=f"paper's size ({PAPER_SIZE_NOTE[study]})")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap over one decade
        if metric.startswith("rejection"):
            ax.set_yscale("log")
        ax.set_xlabel("training jets")
        ax.set_ylabel({"f1_b": "F1, b jets", "f1_c": "F1, c jets", "f1_light": "F1, light jets", "auc": "AUC",
                       "rejection_at_0.3": r"$1/\varepsilon_B$ at $\varepsilon_S = 0.3$"}[metric])
        ax.legend(fontsize=8, loc="best", framealpha=0.8)
    fig.suptitle("ours: points with seed spread, dashed: fitted law; stars: the paper's (theirs)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def evaluate_curves(config: Mapping, checkpoints: Mapping[tuple[str, float, int], str | Path],
                    subsets: Mapping[tuple[str, float], str | Path], tests: Mapping[str, str | Path],
                    output_dir: str | Path) -> list[dict]:
    """Every point: ``checkpoints`` {(method, fraction, replica): path}; ``subsets`` {(study,
    fraction): training subset} (its jets are the point's size); ``tests`` {study: test file}.
    Writes curve.csv, curve.md and <study>.png/pdf; logs learning_curves.evaluate.<method>.
    Returns the summary rows."""
    from pipeline.studies.jet_images.formats import jet_images_schema
    from pipeline.studies.vertexing.formats import TRACK_GRAPHS

    use_evaluation_threads(config)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    schemas = {"vertexing": TRACK_GRAPHS, "jet_images": jet_images_schema()}
    sizes = {}
    for (study, fraction), path in subsets.items():
        with RaggedReader(path, schemas[study]) as reader:
            sizes[study, fraction] = reader.n_rows("jets")
    rows = []
    for (method, fraction, replica), path in sorted(checkpoints.items()):
        study = STUDY_OF[method]
        function = vertexing_metrics if study == "vertexing" else tagger_point_metrics
        for metric, value in function(config, method, path, tests[study]).items():
            rows.append({"study": study, "method": method, "fraction": fraction,
                         "train_jets": sizes[study, fraction], "replica": replica, "metric": metric, "value": value})
        log.info("%s at %s, replica %d: done", method, fraction, replica)
    write_csv(output_dir / "curve.csv", COLUMNS, rows, floats=".6g")
    summary = summarise(rows)
    data = {study: data_set_of(path) or "not recorded" for study, path in tests.items()}
    references = untrained_references(tests["vertexing"]) if "vertexing" in tests else None
    largest = {study: path for (study, _), path in sorted(subsets.items(), key=lambda item: item[0][1])}
    scale = data_scale(largest["vertexing"]) if "vertexing" in largest else None
    background = None
    if "jet_images" in tests:
        with RaggedReader(tests["jet_images"], schemas["jet_images"]) as reader:
            background = int((reader.read("jets", ["label"])["label"] == 0).sum())
    write_table(summary, data, output_dir / "curve.md", references, scale, background)
    for study in dict.fromkeys(r["study"] for r in summary):
        plot_study(summary, study, output_dir / study, references if study == "vertexing" else None)
    stage = {key: config[key] for key in ("seed", "learning_curves")}
    for method in dict.fromkeys(r["method"] for r in summary):
        paths = [tests[STUDY_OF[method]], *(p for (m, _, _), p in checkpoints.items() if m == method)]
        log_run(config, run_name("learning_curves", "evaluate", method), run_tags(stage, paths, "learning_curves",
                                                                                 "evaluate", method),
                {f"{r['metric']}_mean_{r['train_jets']}": r["mean"] for r in summary if r["method"] == method},
                [output_dir / "curve.csv", output_dir / "curve.md"], stage=stage)
    return summary
