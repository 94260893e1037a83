"""The Snakemake workflow itself: dry run, lint, a tiny real run, config errors."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import yaml
from workflow_runs import REPO, job_counts, run_snakemake, write_config

from pipeline.io.hdf5 import RaggedReader
from pipeline.run_config import load_config, resolve_config
from pipeline.simulation.formats import TRACK_JETS
from pipeline.studies import STUDIES, active_studies, registered, tracking_samples
from pipeline.tiny import tiny_workflow_config

TINY = tiny_workflow_config()


def planned_jobs(config: dict) -> dict[str, int]:
    """{rule: jobs} the workflow should plan for a resolved config: generation, the tracker,
    the splits and validation plots of the tracked samples, then each active study's plan
    (``Study.jobs``)."""
    tracked = tracking_samples(config)
    validated = config["validation"]["samples"] or tracked
    jobs = {"generate": sum(sample["shards"] for sample in config["samples"].values()),
            "simulate_tracker": sum(config["samples"][name]["shards"] for name in tracked),
            "split": len(tracked), "plot_validation": len(validated), "all": 1}
    for study in active_studies(config):
        jobs.update(study.jobs(config))
    jobs["total"] = sum(jobs.values())
    return jobs


def test_default_config_dry_run_plans_every_step(tmp_path):
    result = run_snakemake(tmp_path, "-n", "--configfile", str(REPO / "config.yaml"))
    default = load_config(REPO / "config.yaml")
    # Every study runs by default but the learning curves, whose config lists what they measure.
    assert [study.name for study in active_studies(default)] == [s for s in STUDIES if s != "learning_curves"]
    planned = planned_jobs(default)
    # The plan itself, by hand for a few rules: 8 ttbar shards, 16 top and QCD shards for the
    # jet images, the 6 taggers trained once per seed.
    assert planned["simulate_tracker"] == 8 and planned["build_jet_images"] == 16
    assert planned["train_flavour_tagging"] == 6 * default["flavour_tagging"]["seeds"]
    assert job_counts(result.stdout + result.stderr) == planned


def test_lint_is_clean(tmp_path):
    result = run_snakemake(tmp_path, "--lint", "--configfile", str(REPO / "config.yaml"))
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_unknown_key_fails_before_any_job(tmp_path):
    bad = {**TINY, "samples": {"tiny": {**TINY["samples"]["tiny"], "event_per_shard": 5}}}
    config = write_config(tmp_path, bad)
    result = run_snakemake(tmp_path, "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "samples.tiny" in result.stderr and "event_per_shard" in result.stderr
    assert not (tmp_path / "results" / "tiny").exists()


def test_a_results_path_that_is_a_file_stops_the_run_before_anything_is_written(tmp_path):
    config = write_config(tmp_path, TINY)
    (tmp_path / "results").write_text("not a directory")
    result = run_snakemake(tmp_path, "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "results is a file, not a directory: the workflow writes its outputs under results/" in result.stderr
    assert "results/config" not in result.stderr and (tmp_path / "results").read_text() == "not a directory"


def test_a_command_line_config_file_is_the_whole_configuration(tmp_path):
    # config.yaml next to it (configfile: is relative to --directory) must not add its samples.
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"samples": {"mini": {"process": "ttbar", "events_per_shard": 10, "shards": 3}}}))
    result = run_snakemake(tmp_path, "-n", "--configfile", str(mine))
    jobs = job_counts(result.stdout + result.stderr)
    assert jobs["generate"] == 3 and jobs["simulate_tracker"] == 3
    assert "simulate_calorimeter" not in jobs  # no top, no qcd: the jet-image study does not run
    assert "build_particle_flow" not in jobs  # no pflow, no pflow_charged: nor does the particle flow
    assert "build_super_resolution" not in jobs  # nor the super-resolution
    assert "results/ttbar/" not in result.stdout and "results/top/" not in result.stdout


def test_a_bad_value_names_the_file_it_came_from(tmp_path):
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"samples": {"mini": {"process": "ttbar", "shards": 2.0}}}))
    result = run_snakemake(tmp_path, "-n", "--configfile", str(mine), check=False)
    assert result.returncode != 0
    # (A dry run prints its errors on stdout.)
    assert f"{mine}: invalid configuration:\n  samples.mini.shards: 2.0 is not of type 'integer'" in result.stdout
    # Without --configfile the source is config.yaml, and --config overrides are said to be there.
    result = run_snakemake(tmp_path, "-n", "--config", "seed=3.0", check=False)
    assert result.returncode != 0
    assert "config.yaml (with --config overrides): invalid configuration:\n  seed: 3.0 is not of type" in result.stdout


def test_an_empty_sample_list_is_refused_by_name(tmp_path):
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())  # whose samples must not fill in
    mine = tmp_path / "mine.yaml"
    mine.write_text("samples: {}\n")
    result = run_snakemake(tmp_path, "-n", "--configfile", str(mine), check=False)
    assert result.returncode != 0
    assert f"{mine}: invalid configuration:\n  samples: {{}} should be non-empty" in result.stdout


def test_dry_run_writes_nothing_under_results(tmp_path):
    write_config(tmp_path, TINY)  # config.yaml, read without --configfile
    result = run_snakemake(tmp_path, "-n")
    shards = sum(sample["shards"] for sample in TINY["samples"].values())
    assert shards == 7 and job_counts(result.stdout + result.stderr)["generate"] == shards
    assert not (tmp_path / "results").exists()  # not even the config snapshots that running jobs read


@pytest.mark.slow
def test_tiny_workflow_runs_end_to_end(tmp_path):
    config = write_config(tmp_path, TINY)
    run_snakemake(tmp_path, "--configfile", str(config))
    results = tmp_path / "results"
    for split in ("train", "val", "test"):
        assert (results / "tiny" / "split" / f"{split}.h5").stat().st_size > 0
    for plot in ("track_multiplicity", "d0_significance", "hadron_decay_length", "jet_pt"):
        for ext in ("png", "pdf"):
            assert (results / "validation" / "tiny" / f"{plot}.{ext}").stat().st_size > 1000
    assert "| b jets |" in (results / "validation" / "tiny" / "summary.md").read_text()
    assert (tmp_path / "logs" / "generate" / "tiny" / "shard_0.log").exists()

    # The splits partition all generated events with the configured fractions.
    n_events = {}
    for split in ("train", "val", "test"):
        with RaggedReader(results / "tiny" / "split" / f"{split}.h5", TRACK_JETS) as reader:
            n_events[split] = reader.n_rows("events")
            assert reader.attrs["split"] == split
    assert sum(n_events.values()) == 60
    assert n_events == {"train": 2 * 21, "val": 2 * 4, "test": 2 * 5}  # round(0.7*30), round(0.15*30) per shard

    # Every split event comes from a shard, with its jets intact.
    events = []
    for shard in (0, 1):
        with RaggedReader(results / "tiny" / "tracks" / f"shard_{shard}.h5", TRACK_JETS) as reader:
            events.append(reader.n_rows("jets"))
    n_split_jets = 0
    for split in ("train", "val", "test"):
        with RaggedReader(results / "tiny" / "split" / f"{split}.h5", TRACK_JETS) as reader:
            n_split_jets += reader.n_rows("jets")
            offsets = reader.offsets("tracks")
            assert offsets[-1] == reader.n_rows("tracks")
            assert np.all(np.diff(offsets) >= 0)
    assert n_split_jets == sum(events)

    # Vertex finding: every method and flavour in the table, `all` the mean of b, c, light.
    with open(results / "vertexing" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    methods = ["avr", "baseline", "track_pair", "rnn", "set2graph", "single_vertex", "all_singletons"]
    assert [(r["method"], r["flavour"]) for r in rows] == [
        (m, f) for m in methods for f in ("b", "c", "light", "all")]
    for method in methods:
        by_flavour = {r["flavour"]: r for r in rows if r["method"] == method}
        for metric in ("f1", "ri", "ari", "ari_one_sided"):
            values = [float(by_flavour[f][metric]) for f in ("b", "c", "light") if by_flavour[f][metric] != "nan"]
            assert float(by_flavour["all"][metric]) == pytest.approx(np.mean(values), abs=2e-4)
    assert all(float(r["f1"]) == 0.0 for r in rows if r["method"] == "all_singletons")
    for name in ("table.md", "table.tex", "f1_vs_tracks.png", "f1_vs_tracks.pdf", "predictions.h5"):
        assert (results / "vertexing" / name).stat().st_size > 0
    assert "0.66" in (results / "vertexing" / "table.md").read_text()  # the paper's Set2Graph b-jet F1
    inspect = subprocess.run([sys.executable, "-m", "pipeline", "inspect", str(results / "vertexing" / "predictions.h5")],
                             capture_output=True, text=True)
    assert inspect.returncode == 0 and "vertex_predictions version 1" in inspect.stdout, inspect.stderr

    # MLflow saw every training and evaluation (the embedded SQLite store under results/).
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pipeline")
    runs = client.search_runs([experiment.experiment_id])
    names = sorted(run.info.run_name for run in runs)
    resolved = resolve_config(TINY)
    assert names == sorted(name for study in active_studies(resolved) for name in study.runs(resolved))
    taggers = ["no_vertex", "avr", "baseline", "track_pair", "rnn", "set2graph"]
    pf_learned = ["cnn", "graph", "cnn_no_track"]
    pf_methods = ["parametrised", *pf_learned]
    sr_learned = ["redistribute", "cnn"]
    sr_methods = ["uniform", "bicubic", *sr_learned]
    assert len(names) == 3 + 7 + 6 + 6 + 2 + 5 + 5 + 1 + 3 + 4 + 2 + 4  # the plan, counted by hand
    run = {r.info.run_name: r for r in runs}
    train = run["vertexing.train.set2graph"]
    assert "val_loss" in train.data.metrics and train.data.tags["pipeline.version"]
    assert any(key.endswith(".sha256") for key in train.data.tags)

    # Flavour tagging: one row per method; every tagger run names the vertex finder run it used.
    with open(results / "flavour_tagging" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == taggers
    assert list(rows[0]) == ["method", "accuracy", "f1_macro", "acc_b", "acc_c", "acc_light", "light_rejection_b70",
                             "c_rejection_b70", "light_rejection_b77", "c_rejection_b77"]
    table = (results / "flavour_tagging" / "table.md").read_text()
    assert "| set2graph (lecture, theirs) | 0.63 | 0.62 | 0.72 | 0.44 | 0.69 |" in table
    for name in ["roc", *(f"confusion_{m}" for m in taggers)]:
        assert (results / "flavour_tagging" / f"{name}.png").stat().st_size > 1000
    for finder in ("set2graph", "track_pair"):
        for name in (f"flavour_tagging.train.{finder}", f"flavour_tagging.evaluate.{finder}"):
            assert run[name].data.tags["vertex_finder.run_id"] == run[f"vertexing.train.{finder}"].info.run_id
    assert (run["flavour_tagging.train.avr"].data.tags["vertex_finder.run_id"]
            == run["flavour_tagging.score-edges.avr"].info.run_id)
    assert run["flavour_tagging.score-edges.avr"].data.params["chi2_cut"] == "9.0"
    assert run["flavour_tagging.train.no_vertex"].data.tags["vertex_finder.run_id"] == "none"
    assert (run["flavour_tagging.evaluate.rnn"].data.tags["flavour_tagger.run_id"]
            == run["flavour_tagging.train.rnn"].info.run_id)
    # Every run names its study, step and method (the UI groups by them), as its name does,
    # and the workflow rule that ran it.
    assert all(r.info.run_name == ".".join(r.data.tags[k] for k in ("study", "step", "method")) for r in runs)
    rules = set(run_snakemake(tmp_path, "--list-rules", "--configfile", str(config)).stdout.split())
    descriptors = {study.name: study for study in registered()}
    assert all(r.data.tags["rule"] == descriptors[r.data.tags["study"]].rule(r.data.tags["step"]) for r in runs)
    assert {r.data.tags["rule"] for r in runs} >= {"train_vertexing", "score_edges_flavour_tagging",
                                                    "calibrate_particle_flow", "evaluate_super_resolution"}
    assert {r.data.tags["rule"] for r in runs} <= rules

    # The jet-image study: top and QCD through the calorimeter, images, five models, three tables.
    images = results / "jet_images"
    with open(images / "taggers.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["mlp", "cnn"]
    assert list(rows[0]) == ["model", "auc", "accuracy", "rejection_at_0.3", "rejection_at_0.5"]
    assert all(0 <= float(r["auc"]) <= 1 for r in rows)
    with open(images / "autoencoder.csv") as f:
        assert [r["model"] for r in csv.DictReader(f)] == ["autoencoder", "autoencoder_inverse"]
    with open(images / "denoising.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["images"] for r in rows] == ["clean", "noisy", "denoised"] and float(rows[0]["mse"]) == 0
    assert "0.981" in (images / "taggers.md").read_text()  # the landscape paper's CNN AUC, theirs
    for name in ("average_images", "single_jets", "roc", "autoencoder_roc", "reconstruction", "denoising"):
        assert (images / f"{name}.png").stat().st_size > 1000
    assert run["jet_images.train.autoencoder"].data.tags["trained_on"] == "qcd"

    # The particle-flow study: every method in every energy bin of the pi0 and in `all`, the
    # figures, and each evaluation naming the training it scored.
    flow = results / "particle_flow"
    with open(flow / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["method", "energy_bin", "n_events", "response_median", "resolution_iqr", "cell_mse",
                             "position_resolution"]
    bins = ["2-5 GeV", "5-10 GeV", "10-15 GeV", "15-20 GeV", "all"]
    assert [(r["method"], r["energy_bin"]) for r in rows] == [(m, b) for m in pf_methods for b in bins]
    n_test = {r["method"]: int(r["n_events"]) for r in rows if r["energy_bin"] == "all"}
    assert len(set(n_test.values())) == 1 and 0 < n_test["cnn"] <= 60
    with open(flow / "cell_mse.csv") as f:
        assert [(r["method"], r["layer"]) for r in csv.DictReader(f)] == [
            (m, layer) for m in pf_methods for layer in ("em1", "em2", "em3", "had1", "had2", "had3")]
    for name in ("response", "resolution", "event_display_0", "event_display_2"):
        assert (flow / f"{name}.png").stat().st_size > 1000
    assert "| all | graph |" in (flow / "metrics.md").read_text()
    for method in pf_learned:
        assert (run[f"particle_flow.evaluate.{method}"].data.tags["training.run_id"]
                == run[f"particle_flow.train.{method}"].info.run_id)
    assert "inclusive_mean" in run["particle_flow.calibrate.parametrised"].data.metrics

    # The super-resolution study: every method in every layer, the physics beside the fine
    # truth and the coarse input, the interpolations and redistribute conserving each cell.
    sr = results / "super_resolution"
    with open(sr / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["method", "layer", "mse", "psnr", "ssim", "energy_closure", "energy_bias"]
    assert [(r["method"], r["layer"]) for r in rows] == [
        (m, layer) for m in sr_methods for layer in ("em1", "em2", "em3", "had1", "had2", "had3")]
    assert all(float(r["energy_closure"]) < 1e-5 for r in rows if r["method"] != "cnn")
    with open(sr / "physics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["fine", "coarse", *sr_methods]
    assert all(0 <= float(r["resolved_fraction"]) <= 1 for r in rows)
    for name in ("psnr", "mass", "event_display_0", "event_display_1", "downstream_resolution"):
        assert (sr / f"{name}.png").stat().st_size > 1000
    with open(sr / "downstream.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["energy_bin"]) for r in rows] == [
        (m, b) for m in [*sr_methods, "particle_flow detector"] for b in bins]
    assert sr_methods[0] in (sr / "metrics.md").read_text() and "coarse" in (sr / "physics.md").read_text()
    for method in sr_learned:
        assert (run[f"super_resolution.evaluate.{method}"].data.tags["training.run_id"]
                == run[f"super_resolution.train.{method}"].info.run_id)
    assert not (tmp_path / "resume").exists()  # every training finished and cleared its epoch checkpoints
    # A second run has nothing to do.
    again = run_snakemake(tmp_path, "--configfile", str(config))
    assert "Nothing to be done" in again.stdout + again.stderr

    # The metrics do not depend on the cores: every evaluation again on one core (Snakemake
    # then gives each job one thread) writes the same bytes, as torch runs evaluation.threads.
    tables = sorted(p for study in ("vertexing", "flavour_tagging", "jet_images", "particle_flow", "super_resolution")
                    for p in (results / study).glob("*.csv"))
    before = {path: path.read_bytes() for path in tables}
    evaluations = [study.rule("evaluate") for study in active_studies(resolve_config(TINY))]
    run_snakemake(tmp_path, "--configfile", str(config), "--forcerun", *evaluations, cores="1")
    # (the five that differed in their last digits before, among them)
    assert {"particle_flow/metrics.csv", "particle_flow/distance.csv", "particle_flow/cell_mse.csv",
            "super_resolution/metrics.csv", "super_resolution/downstream.csv"} <= {f"{p.parent.name}/{p.name}" for p in tables}
    assert [path for path in tables if path.read_bytes() != before[path]] == []

    # Moving MLflow to a server, or the resume directory, reruns nothing.
    write_config(tmp_path, {**TINY, "mlflow": {"tracking_uri": "http://127.0.0.1:5999"},
                            "training": {**TINY["training"], "resume_dir": "elsewhere"}})
    moved = run_snakemake(tmp_path, "-n", "--configfile", str(config))
    assert "Nothing to be done" in moved.stdout + moved.stderr

    # New detector settings rerun the tracker, the calorimeter and what follows, not Pythia.
    write_config(tmp_path, {**TINY, "tracker": {"bfield": 3.8}, "calorimeter": {"noise_threshold": 4.0}})
    plan = run_snakemake(tmp_path, "-n", "--configfile", str(config))
    jobs = job_counts(plan.stdout + plan.stderr)
    assert jobs.get("simulate_tracker") == 2 and jobs.get("split") == 1
    assert jobs.get("train_vertexing") == 3
    assert jobs.get("simulate_calorimeter") == 2 and jobs.get("train_jet_images") == 5
    assert "generate" not in jobs

    # The report of the run (`snakemake --report`): one category per study and the validation,
    # every figure and table in it with its caption. The zip holds report/report.html, whose
    # <script id="categories"> and id="results"> give {category: {subcategory: [path]}} and
    # {path: {caption, data_uri}}, and each file under report/data/raw/<id>/<name>.
    import json
    import zipfile

    write_config(tmp_path, TINY)  # the run's own config again
    run_snakemake(tmp_path, "--report", str(tmp_path / "report.zip"), "--configfile", str(config))
    with zipfile.ZipFile(tmp_path / "report.zip") as archive:
        stored = set(archive.namelist())
        page = archive.read("report/report.html").decode()

    def embedded(name):
        return json.JSONDecoder().raw_decode(page.split(f'<script id="{name}">', 1)[1].split("=", 1)[1].strip())[0]

    categories, entries = embedded("categories"), embedded("results")
    expected = {
        "validation": [f"validation/tiny/{name}" for name in ("track_multiplicity.png", "d0_significance.png",
                                                               "hadron_decay_length.png", "jet_pt.png", "summary.md")],
        "vertexing": ["vertexing/metrics.csv", "vertexing/table.md", "vertexing/f1_vs_tracks.png"],
        "flavour_tagging": ["flavour_tagging/table.md", "flavour_tagging/roc.png",
                            *(f"flavour_tagging/confusion_{m}.png" for m in taggers)],
        "jet_images": [f"jet_images/{name}" for name in ("average_images.png", "single_jets.png", "taggers.md", "roc.png",
                                                         "autoencoder.md", "autoencoder_roc.png", "reconstruction.png",
                                                         "denoising.md", "denoising.png")],
        "particle_flow": [f"particle_flow/{name}" for name in ("metrics.md", "metrics.csv", "cell_mse.csv",
                                                               "response.png", "resolution.png", "event_display_0.png",
                                                               "event_display_1.png", "event_display_2.png")],
        "super_resolution": [f"super_resolution/{name}" for name in ("metrics.md", "psnr.png", "physics.md", "mass.png",
                                                                     "shower_shapes.md", "event_display_0.png",
                                                                     "event_display_1.png", "downstream.md",
                                                                     "downstream_resolution.png")],
    }
    assert {category: sorted(path for paths in subcategories.values() for path in paths)
            for category, subcategories in categories.items()} == {
        category: sorted(f"results/{path}" for path in paths) for category, paths in expected.items()}
    for path, entry in entries.items():
        assert f"report/{entry['data_uri']}" in stored, path
        assert entry["caption"] and "system-message" not in entry["caption"], path  # rendered, no RST error
    assert "60 events" in entries["results/validation/tiny/jet_pt.png"]["caption"]  # from the config: 2 x 30
    assert "0.66" in entries["results/vertexing/table.md"]["caption"]  # the paper's Set2Graph b-jet F1, theirs
    assert "0.981" in entries["results/jet_images/taggers.md"]["caption"]  # the landscape paper's CNN AUC, theirs
    description = embedded("workflow-desc")  # workflow/report/workflow.rst, the report's front page
    assert "seeded from" in description and "system-message" not in description
