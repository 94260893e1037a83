"""Job resources of the paper-size configurations (workflow/configs/paper/<study>.yaml), from
costs measured on this machine.

    python bench/paper_resources.py [--studies vertexing jet_images particle_flow super_resolution]
                                    [--reuse] [--workdir DIR]

For each paper configuration, with its own sample, detector and network settings and only
the events per shard made small (``BENCH_EVENTS``, one shard per sample), this runs the
real steps of the workflow, each in a fresh process (``--child``), and records its CPU time,
wall time and peak resident memory (VmHWM):

1. generation (Pythia + jets, or the particle guns) and the detector stage (tracker,
   calorimeter, the particle-flow or super-resolution images), the splits, the track graphs,
   the classical vertex finders' edge scores, the particle-flow calibration and its
   parametrised subtraction: CPU seconds per event (or jet), jets (images) per event, HDF5
   bytes per event (or jet);
2. a few real training batches of every learned model, built by the study's own train
   function (its DataModule and LightningModule; only ``train_method`` is replaced by a timed
   Lightning fit of a few steps on the CPU, one torch thread, at the configuration's batch size
   per device) and a few validation batches: CPU seconds per jet (event) and epoch, peak memory
   of that process.

From these and each configuration's events, shards, splits, epochs, devices and nodes it
estimates every job class of the configuration's DAG (memory [MB], runtime [min], GPUs, CPU
hours), writes ``workflow/configs/paper/<study>.resources.yaml`` beside the configuration and
prints a table. Everything measured here ran on this machine's CPU: no GPU was measured, so a
training's GPU runtime is not estimated (its CPU hours are). ``--reuse`` recomputes the
estimates and the table from the measurements stored in the existing resources files (after
a change of the configurations' counts), without measuring again.

The jet-image models' training file repeats the real images of the bench run (mirrored at
random, labels redrawn: bench/images.py's ``write_images``) so that the configuration's batch
size has full batches: a dense network's cost per image does not depend on the image.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "workflow" / "configs" / "paper"
STUDIES = ("vertexing", "jet_images", "particle_flow", "super_resolution")

#: Events generated per sample for the measurement (one shard each): at least one chunk of the
#: tracker (2000 events) for ttbar; for the jet images enough for ~600 jets of each class (the
#: measured jets per event then carry a statistical uncertainty of ~4 %); a few hundred of the guns.
BENCH_EVENTS = {
    "vertexing": {"ttbar": 2000},
    "jet_images": {"top": 1400, "qcd": 900},
    "particle_flow": {"pflow": 800, "pflow_charged": 500},
    "super_resolution": {"pflow": 500, "pi0": 500},
}
#: Events (or jets) a streaming stage holds at once (the modules' chunk sizes): a stage measured
#: on fewer has its memory growth above the imports extrapolated linearly to one chunk.
CHUNK_EVENTS = {"simulate_tracker": 2000, "split": 5000, "simulate_calorimeter": 256, "build_jet_images": 500,
                "build_images": 64, "split_jet_images": 5000}
CHUNK_JETS = {"build_graphs": 100_000}
#: A training's timed part: warm-up batches (not timed), then batches to the end of the epoch in
#: which this many CPU seconds are passed (or 3x that within one epoch); validation batches after it.
WARMUP_BATCHES = 2
TRAIN_SECONDS = 8.0
MIN_TRAIN_BATCHES = 6
VAL_BATCHES = 12
#: Memory asked of the scheduler per job: the measured (or extrapolated) peak times this margin,
#: rounded up to 100 MB (our choice, not measured).
MEMORY_MARGIN = 1.5
SIZE_KEYS = ("n_tracks", "label", "track")


# ----------------------------------------------------------------------------- children


def vm(key: str) -> int:
    """This process's ``key`` line of /proc/self/status (VmRSS, VmHWM), in kB."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(key + ":")).split()[1])


def file_bytes(*paths) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def batch_length(batch) -> int:
    for key in SIZE_KEYS:
        if key in batch:
            return len(batch[key])
    raise KeyError(f"no batch size among {SIZE_KEYS} in {sorted(batch)}")


def _timed_fit(result: dict):
    """A ``train_method`` stand-in: build the DataModule and the LightningModule exactly as
    ``train_method`` does (the study's training overrides applied), then time a few training and
    validation batches with a Lightning Trainer on the CPU (one thread, 32-bit). Fills ``result``."""
    import lightning.pytorch as pl
    import torch

    from pipeline.ml.memory_format import channels_last
    from pipeline.ml.threads import use_threads
    from pipeline.ml.trainer import study_training_config

    class Timer(pl.Callback):
        def __init__(self):
            self.train, self.val = [], []  # (cpu, wall, jets) at each batch end
            self.start = None

        def elapsed(self) -> float:
            timed = self.train[WARMUP_BATCHES:]
            return timed[-1][0] - self.train[WARMUP_BATCHES - 1][0] if len(timed) > MIN_TRAIN_BATCHES else 0.0

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.train.append((time.process_time(), time.perf_counter(), batch_length(batch)))
            if self.elapsed() > 3 * TRAIN_SECONDS:  # an epoch longer than the budget: stop within it
                trainer.should_stop = True

        def on_train_epoch_end(self, trainer, module):
            # Whole epochs (after the warm-up): the vertex finders' batches are ordered by track
            # count, so a part of an epoch would weigh some jet sizes more than others.
            if self.elapsed() > TRAIN_SECONDS:
                trainer.should_stop = True

        def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
            self.val.append((time.process_time(), time.perf_counter(), batch_length(batch)))

    def per_example(marks):
        """(CPU s, wall s) per example over the marks after the warm-up (time from the previous mark:
        loading, forward, loss, backward, optimiser step, Lightning's loop)."""
        if len(marks) <= WARMUP_BATCHES:
            raise RuntimeError(f"only {len(marks)} batches: too few to time after {WARMUP_BATCHES} warm-up batches")
        first, timed = marks[WARMUP_BATCHES - 1], marks[WARMUP_BATCHES:]
        jets = sum(m[2] for m in timed)
        return (timed[-1][0] - first[0]) / jets, (timed[-1][1] - first[1]) / jets, jets, len(timed)

    def fit(config, study, method, data, model, *args, **kwargs):
        config = study_training_config(config, study)
        pl.seed_everything(1, workers=True, verbose=False)
        datamodule, module = data(config), model(config)
        use_threads(1)
        timer = Timer()
        common = dict(accelerator="cpu", devices=1, precision="32-true", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer])
        trainer = pl.Trainer(max_epochs=1000, max_steps=100_000, limit_val_batches=0, **common)
        trainer.fit(channels_last(module), datamodule=datamodule)
        validator = pl.Trainer(limit_val_batches=WARMUP_BATCHES + VAL_BATCHES, **common)
        validator.validate(module, datamodule=datamodule, verbose=False)
        train_cpu, train_wall, train_examples, train_batches = per_example(timer.train)
        val_cpu, val_wall, val_examples, _ = per_example(timer.val)
        result.update(batch_size=config["training"]["batch_size"],
                      parameters=sum(p.numel() for p in module.parameters()),
                      train_cpu_s_per_example=train_cpu, train_wall_s_per_example=train_wall,
                      train_examples_timed=train_examples, train_batches_timed=train_batches,
                      val_cpu_s_per_example=val_cpu, val_wall_s_per_example=val_wall,
                      val_examples_timed=val_examples, torch=str(torch.__version__))
        return {}

    return fit


def _train(task: dict, config: dict, result: dict) -> None:
    study, method, files = task["study"], task["method"], dict(task["files"])
    # The validation batches are timed on the training file: a forward pass costs the same on
    # either split, and the bench's validation split is too small for the batch sizes.
    files["val"] = files["train"]
    files["edges_val"] = files.get("edges_train")
    module = __import__(f"pipeline.studies.{study}.train", fromlist=["train_method"])
    module.train_method = _timed_fit(result)
    out = Path(task["workdir"])
    ckpt, history = out / f"{study}_{method}.ckpt", out / f"{study}_{method}.csv"
    if study == "vertexing":
        module.train_vertex_finder(config, method, files["train"], files["val"], ckpt, history, progress=False)
    elif study == "flavour_tagging":
        edges = None if method == "no_vertex" else {"train": files["edges_train"], "val": files["edges_val"]}
        module.train_flavour_tagger(config, method, {"train": files["train"], "val": files["val"]}, edges, ckpt,
                                    history, progress=False)
    elif study == "jet_images":
        module.train_image_model(config, method, {"train": files["train"], "val": files["val"]}, ckpt, history,
                                 progress=False)
    elif study == "particle_flow":
        module.train_particle_flow(config, method, {"train": files["train"], "val": files["val"]}, ckpt, history,
                                   progress=False)
    elif study == "super_resolution":
        module.train_super_resolution(config, method, {"train": files["train"], "val": files["val"]}, ckpt, history,
                                      progress=False)
    else:
        raise ValueError(study)


def _step(task: dict, config: dict, result: dict) -> None:
    """One workflow step (as its command runs it) on the bench files; fills ``result``."""
    from pipeline.io.hdf5 import RaggedReader

    kind, files = task["kind"], task["files"]
    if kind == "generate":
        sample = config["samples"][task["sample"]]
        if sample["process"] == "particle_gun":
            from pipeline.simulation.gun import generate_gun_shard

            steps = generate_gun_shard(config, task["sample"], 0, files["output"], progress=False)
        else:
            from pipeline.simulation.formats import PARTICLE_JETS
            from pipeline.simulation.generation import generate_shard

            steps = generate_shard(config, task["sample"], 0, files["output"], progress=False)
            with RaggedReader(files["output"], PARTICLE_JETS) as reader:
                result["jets"] = reader.n_rows("jets")
        result["init_s"] = steps["init"]
        result["events"] = sample["events_per_shard"]
    elif kind == "simulate_tracker":
        from pipeline.simulation.tracker_stage import track_shard

        track_shard(config, files["input"], files["output"], progress=False)
    elif kind == "simulate_calorimeter":
        from pipeline.simulation.calorimeter_stage import simulate_calorimeter

        simulate_calorimeter(config, files["input"], files["output"], progress=False)
    elif kind == "split":
        from pipeline.simulation.split import split_sample

        result["split_events"] = split_sample(config, task["sample"], files["inputs"], files["outputs"])
    elif kind == "plot_validation":
        from pipeline.simulation.validation import plot_validation

        plot_validation(files["inputs"], files["output_dir"])
    elif kind == "build_graphs":
        from pipeline.studies.vertexing.features import build_track_graphs

        result["jets"] = build_track_graphs(config, task["sample"], files["inputs"], files["outputs"])
    elif kind == "score_edges":
        from pipeline.studies.flavour_tagging.edges import score_edges

        result["jets"] = score_edges(config, task["finder"], files["inputs"], files["outputs"])
    elif kind == "build_jet_images":
        from pipeline.studies.jet_images.preparation import build_jet_images

        result["jets"] = build_jet_images(config, files["generated"], files["cells"], files["output"], progress=False)
    elif kind == "split_jet_images":
        from pipeline.studies.jet_images.preparation import split_jet_images

        result["split_jets"] = split_jet_images(config, files["inputs"], files["outputs"])
    elif kind == "plot_jet_images":
        from pipeline.studies.jet_images.preparation import plot_jet_images

        plot_jet_images(files["input"], files["output_dir"])
    elif kind in ("build_particle_flow", "build_super_resolution"):
        if kind == "build_particle_flow":
            from pipeline.studies.particle_flow.images import build_image_shard as build
        else:
            from pipeline.studies.super_resolution.detector import build_shard as build
        result["rows"] = build(config, files["input"], files["output"], progress=False)
    elif kind in ("split_particle_flow", "split_super_resolution"):
        from pipeline.simulation.split import split_sample
        from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES

        if kind == "split_particle_flow":
            stage, sections = config, ("split", "tracker", "calorimeter", "particle_flow")
        else:
            from pipeline.studies.super_resolution.detector import IMAGE_SECTIONS, detector_config

            stage, sections = detector_config(config), ("split", *IMAGE_SECTIONS)
        result["split_events"] = split_sample(stage, task["sample"], files["inputs"], files["outputs"],
                                              PARTICLE_FLOW_IMAGES, sections)
    elif kind == "calibrate_particle_flow":
        from pipeline.studies.particle_flow.calibration import calibrate

        calibrate(config, files["inputs"], files["output"], progress=False)
    elif kind == "parametrised_subtraction":
        from pipeline.studies.particle_flow.data import ParticleFlowBatches
        from pipeline.studies.particle_flow.evaluate import subtraction_fractions
        from pipeline.studies.particle_flow.templates import Templates

        templates = Templates.load(files["templates"])
        batches = ParticleFlowBatches(files["input"], 256, evaluation=True)
        events = 0
        for index in range(len(batches)):
            batch = batches[index]
            subtraction_fractions(templates, batch)
            events += len(batch["track"])
        result["events"] = events
    else:
        raise ValueError(f"unknown step {kind!r}")


def child(spec_path: str) -> None:
    """Run one task (a JSON file) and print its measurements as one JSON line."""
    started = time.perf_counter()
    task = json.loads(Path(spec_path).read_text())
    config = json.loads(Path(task["config"]).read_text())
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    from pipeline.allocator import retain_freed_memory

    retain_freed_memory()  # as the pipeline command does for every step
    # The modules the step imports, before the clock starts (a job imports them too: its fixed cost).
    import lightning.pytorch  # noqa: F401
    import torch

    import pipeline.studies  # noqa: F401

    torch.set_num_threads(1)
    result: dict = {}
    imported = time.perf_counter()
    base_kb = vm("VmRSS")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if task["kind"] == "train":
        _train(task, config, result)
    else:
        _step(task, config, result)
    result.update(cpu_s=time.process_time() - cpu0, wall_s=time.perf_counter() - wall0,
                  startup_s=imported - started, base_mb=base_kb / 1024, peak_mb=vm("VmHWM") / 1024)
    print("RESULT " + json.dumps(result))


def run_child(task: dict, workdir: Path) -> dict:
    """Run ``task`` in a fresh Python process; its measurements, with the process's wall time."""
    spec = workdir / f"task_{abs(hash(json.dumps(task, sort_keys=True)))}.json"
    spec.write_text(json.dumps(task))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", str(spec)], capture_output=True, text=True,
                          cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"task {task['kind']} {task.get('sample') or task.get('method', '')} failed:\n"
                           f"{done.stderr[-4000:]}")
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["process_wall_s"] = time.perf_counter() - started
    label = task.get("sample") or task.get("finder") or task.get("method") or ""
    print(f"  {task['kind']:26} {label:22} cpu {result['cpu_s']:7.2f} s  wall {result['wall_s']:7.2f} s  "
          f"peak {result['peak_mb']:6.0f} MB", flush=True)
    return result


# ----------------------------------------------------------------------------- measuring


def paper_config(study: str) -> dict:
    """The paper configuration of ``study``, validated (``pipeline.run_config.load_config``)."""
    from pipeline.run_config import load_config

    return load_config(PAPER / f"{study}.yaml")


def bench_config(study: str, workdir: Path) -> tuple[dict, Path]:
    """The paper configuration with BENCH_EVENTS events in one shard per sample, MLflow and the
    resume directory in ``workdir``; validated and written (JSON) for the children."""
    from pipeline.run_config import resolve_config

    raw = yaml.safe_load((PAPER / f"{study}.yaml").read_text())
    for sample, events in BENCH_EVENTS[study].items():
        raw["samples"][sample].update(events_per_shard=events, shards=1)
    raw["mlflow"] = {"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}"}
    raw.setdefault("training", {})["resume_dir"] = str(workdir / "resume")
    config = resolve_config(raw, source=f"{study} bench config")
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    return config, path


def stat_error(examples: int, events: int) -> float:
    """The relative statistical uncertainty of a measured rate of examples per event: Poisson,
    1/sqrt(examples), or 0 where every event gave exactly one (the guns' images)."""
    return 0.0 if examples == events else 1.0 / math.sqrt(max(examples, 1))


def splits(d: Path, name: str) -> dict:
    return {split: str(d / f"{name}_{split}.h5") for split in ("train", "val", "test")}


def measure_vertexing(workdir: Path) -> dict:
    config, cfg = bench_config("vertexing", workdir)
    sample = config["vertexing"]["sample"]
    m: dict = {"samples": {}, "steps": {}, "models": {}}
    base = {"config": str(cfg), "workdir": str(workdir)}
    gen, trk = workdir / "gen.h5", workdir / "tracks.h5"
    m["steps"]["generate"] = {sample: run_child({**base, "kind": "generate", "sample": sample,
                                                 "files": {"output": str(gen)}}, workdir)}
    m["steps"]["simulate_tracker"] = {sample: run_child({**base, "kind": "simulate_tracker", "sample": sample,
                                                         "files": {"input": str(gen), "output": str(trk)}}, workdir)}
    split_files = splits(workdir, "split")
    m["steps"]["split"] = {sample: run_child({**base, "kind": "split", "sample": sample,
                                              "files": {"inputs": [str(trk)], "outputs": split_files}}, workdir)}
    m["steps"]["plot_validation"] = {sample: run_child({**base, "kind": "plot_validation", "files": {
        "inputs": [str(trk)], "output_dir": str(workdir / "plots")}}, workdir)}
    graphs = splits(workdir, "graphs")
    built = run_child({**base, "kind": "build_graphs", "sample": sample,
                       "files": {"inputs": split_files, "outputs": graphs}}, workdir)
    m["steps"]["build_graphs"] = {sample: built}
    events = config["samples"][sample]["events_per_shard"]
    jets = sum(built["jets"].values())
    m["samples"][sample] = {
        "bench_events": events, "examples_per_event": jets / events, "examples": jets,
        "examples_per_event_rel_error": stat_error(jets, events),
        "example": f"jets with {config['vertexing']['min_tracks']}-{config['vertexing']['max_tracks']} tracks "
                           "(vertexing.min_tracks, max_tracks): the track_graphs files",
        "generated_jets_per_event": m["steps"]["generate"][sample]["jets"] / events,
        "bytes_per_event": {"generated": file_bytes(gen) / events, "tracks": file_bytes(trk) / events,
                            "split": file_bytes(*split_files.values()) / events},
        "bytes_per_example": {"track_graphs": file_bytes(*graphs.values()) / jets}}
    edges = {}
    m["steps"]["score_edges"] = {}
    for finder in ("avr", "baseline"):
        edges[finder] = splits(workdir, f"edges_{finder}")
        scored = run_child({**base, "kind": "score_edges", "finder": finder,
                            "files": {"inputs": graphs, "outputs": edges[finder]}}, workdir)
        m["steps"]["score_edges"][finder] = scored
        m["samples"][sample]["bytes_per_example"]["vertex_edges"] = file_bytes(*edges[finder].values()) / jets
    for method in ("track_pair", "rnn", "set2graph"):
        m["models"][f"vertexing.{method}"] = run_child({**base, "kind": "train", "study": "vertexing",
                                                        "method": method, "files": graphs}, workdir)
    for method in ("no_vertex", "baseline"):
        files = {**graphs, "edges_train": edges["baseline"]["train"], "edges_val": edges["baseline"]["val"]}
        m["models"][f"flavour_tagging.{method}"] = run_child({**base, "kind": "train", "study": "flavour_tagging",
                                                              "method": method, "files": files}, workdir)
    return m


def measure_jet_images(workdir: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from images import write_images  # the jet-image benchmark's file of repeated real images

    config, cfg = bench_config("jet_images", workdir)
    m: dict = {"samples": {}, "steps": {k: {} for k in ("generate", "simulate_calorimeter", "build_jet_images")},
               "models": {}}
    base = {"config": str(cfg), "workdir": str(workdir)}
    images = []
    for sample in (config["jet_images"]["signal"], config["jet_images"]["background"]):
        gen, cells, img = (workdir / f"{sample}_{kind}.h5" for kind in ("gen", "cells", "images"))
        m["steps"]["generate"][sample] = run_child({**base, "kind": "generate", "sample": sample,
                                                    "files": {"output": str(gen)}}, workdir)
        m["steps"]["simulate_calorimeter"][sample] = run_child(
            {**base, "kind": "simulate_calorimeter", "sample": sample,
             "files": {"input": str(gen), "output": str(cells)}}, workdir)
        built = run_child({**base, "kind": "build_jet_images", "sample": sample,
                           "files": {"generated": str(gen), "cells": str(cells), "output": str(img)}}, workdir)
        m["steps"]["build_jet_images"][sample] = built
        events = config["samples"][sample]["events_per_shard"]
        m["samples"][sample] = {
            "bench_events": events, "examples_per_event": built["jets"] / events, "examples": built["jets"],
            "examples_per_event_rel_error": stat_error(built["jets"], events),
            "example": ("jet images: top jets containing a hadronic top and its three decay quarks"
                                if sample == config["jet_images"]["signal"] else "jet images: every selected jet"),
            "generated_jets_per_event": m["steps"]["generate"][sample]["jets"] / events,
            "bytes_per_event": {"generated": file_bytes(gen) / events, "calorimeter": file_bytes(cells) / events},
            "bytes_per_example": {"jet_images": file_bytes(img) / built["jets"]}}
        images.append(str(img))
    split_files = splits(workdir, "images")
    m["steps"]["split_jet_images"] = {"all": run_child({**base, "kind": "split_jet_images", "files": {
        "inputs": images, "outputs": split_files}}, workdir)}
    m["steps"]["plot_jet_images"] = {"all": run_child({**base, "kind": "plot_jet_images", "files": {
        "input": split_files["train"], "output_dir": str(workdir / "plots")}}, workdir)}
    # Enough images for full batches at the configuration's batch size (see the module's docstring).
    from pipeline.ml.trainer import study_training_config

    batch = study_training_config(config, "jet_images")["training"]["batch_size"]
    repeated = {}
    for split, n in (("train", 30 * batch), ("val", 16 * batch)):
        repeated[split] = str(workdir / f"repeated_{split}.h5")
        write_images(Path(split_files[split]), Path(repeated[split]), n, seed=len(split))
    for method in ("mlp", "cnn", "autoencoder", "autoencoder_inverse", "denoising_autoencoder"):
        m["models"][f"jet_images.{method}"] = run_child({**base, "kind": "train", "study": "jet_images",
                                                         "method": method, "files": repeated}, workdir)
    return m


def _gun_images(config: dict, base: dict, workdir: Path, m: dict, sample: str, kind: str) -> Path:
    gen, img = workdir / f"{sample}_gen.h5", workdir / f"{sample}_{kind}.h5"
    m["steps"].setdefault("generate", {})[sample] = run_child({**base, "kind": "generate", "sample": sample,
                                                               "files": {"output": str(gen)}}, workdir)
    built = run_child({**base, "kind": kind, "sample": sample, "files": {"input": str(gen), "output": str(img)}},
                      workdir)
    m["steps"].setdefault(kind, {})[sample] = built
    events = config["samples"][sample]["events_per_shard"]
    images = built["rows"]["events"]
    m["samples"][sample] = {"bench_events": events, "examples_per_event": images / events, "examples": images,
                            "examples_per_event_rel_error": stat_error(images, events),
                            "example": "images (events whose charged pion has a track in the window)",
                            "bytes_per_event": {"generated": file_bytes(gen) / events},
                            "bytes_per_example": {"images": file_bytes(img) / images}}
    return img


def measure_particle_flow(workdir: Path) -> dict:
    config, cfg = bench_config("particle_flow", workdir)
    m: dict = {"samples": {}, "steps": {}, "models": {}}
    base = {"config": str(cfg), "workdir": str(workdir)}
    sample, calibration = config["particle_flow"]["sample"], config["particle_flow"]["calibration"]
    images = _gun_images(config, base, workdir, m, sample, "build_particle_flow")
    calib = _gun_images(config, base, workdir, m, calibration, "build_particle_flow")
    split_files = splits(workdir, "pflow")
    m["steps"]["split_particle_flow"] = {sample: run_child({**base, "kind": "split_particle_flow", "sample": sample,
                                                            "files": {"inputs": [str(images)],
                                                                      "outputs": split_files}}, workdir)}
    templates = workdir / "templates.json"
    m["steps"]["calibrate_particle_flow"] = {calibration: run_child(
        {**base, "kind": "calibrate_particle_flow", "files": {"inputs": [str(calib)], "output": str(templates)}},
        workdir)}
    m["steps"]["parametrised_subtraction"] = {sample: run_child(
        {**base, "kind": "parametrised_subtraction", "files": {"input": split_files["test"],
                                                               "templates": str(templates)}}, workdir)}
    for method in ("cnn", "cnn_no_track", "graph"):
        m["models"][f"particle_flow.{method}"] = run_child({**base, "kind": "train", "study": "particle_flow",
                                                            "method": method, "files": split_files}, workdir)
    return m


def measure_super_resolution(workdir: Path) -> dict:
    config, cfg = bench_config("super_resolution", workdir)
    m: dict = {"samples": {}, "steps": {}, "models": {}}
    base = {"config": str(cfg), "workdir": str(workdir)}
    files = {"train": [], "val": [], "test": []}
    m["steps"]["split_super_resolution"] = {}
    for sample in (config["super_resolution"]["sample"], config["super_resolution"]["pi0_sample"]):
        images = _gun_images(config, base, workdir, m, sample, "build_super_resolution")
        split_files = splits(workdir, f"sr_{sample}")
        m["steps"]["split_super_resolution"][sample] = run_child(
            {**base, "kind": "split_super_resolution", "sample": sample,
             "files": {"inputs": [str(images)], "outputs": split_files}}, workdir)
        for split in files:
            files[split].append(split_files[split])
    for method in ("redistribute", "cnn"):
        m["models"][f"super_resolution.{method}"] = run_child(
            {**base, "kind": "train", "study": "super_resolution", "method": method, "files": files}, workdir)
    return m


MEASURE = {"vertexing": measure_vertexing, "jet_images": measure_jet_images,
           "particle_flow": measure_particle_flow, "super_resolution": measure_super_resolution}


# ----------------------------------------------------------------------------- estimating


def request_mb(peak_mb: float) -> int:
    return int(math.ceil(peak_mb * MEMORY_MARGIN / 100.0) * 100)


def extrapolated_peak(step: dict, units: float, chunk: float | None) -> tuple[float, str]:
    """(peak MB of a job that streams ``chunk`` events or jets at once, how it was obtained):
    measured, or the growth above the imports scaled from ``units`` to one chunk."""
    if chunk is None or units >= chunk:
        return step["peak_mb"], "measured"
    peak = step["base_mb"] + (step["peak_mb"] - step["base_mb"]) * chunk / units
    return peak, f"measured on {units:.0f}, growth above the imports scaled linearly to a chunk of {chunk}"


def shard_job(step: dict, per_job_units: float, bench_units: float, jobs: int, chunk: float | None,
              unit: str) -> dict:
    """A job that processes ``per_job_units`` events (or jets), from a step measured on ``bench_units``."""
    fixed = step.get("init_s", 0.0)
    per_unit = max(step["cpu_s"] - fixed, 0.0) / bench_units
    seconds = step["startup_s"] + fixed + per_unit * per_job_units
    peak, how = extrapolated_peak(step, bench_units, chunk)
    return {"jobs": jobs, "gpus": 0, "threads": 1, "peak_mb": round(peak), "mem_mb": request_mb(peak),
            "runtime_min": round(seconds / 60, 1), "cpu_hours": round(jobs * seconds / 3600, 2),
            "basis": f"measured: {per_unit * 1e3:.3f} ms CPU per {unit}, {fixed + step['startup_s']:.1f} s start-up "
                     f"(imports, init), x {per_job_units:,.0f} {unit}s per job; memory {how}"}


def training_job(model: dict, train_examples: float, val_examples: float, training: dict, jobs: int,
                 unit: str = "jet") -> dict:
    per_epoch = train_examples * model["train_cpu_s_per_example"] + val_examples * model["val_cpu_s_per_example"]
    epochs = training["max_epochs"]
    devices, nodes = training["devices"], training["num_nodes"]
    gpus = devices * nodes if training["accelerator"] not in ("cpu", "mps") else 0
    return {
        "jobs": jobs, "gpus": gpus, "nodes": nodes, "processes_per_node": devices,
        "batch_size_per_device": training["batch_size"],
        "effective_batch": training["batch_size"] * devices * nodes * training.get("accumulate_batches", 1),
        "max_epochs": epochs, "peak_mb_per_process": round(model["peak_mb"]),
        "mem_mb": request_mb(model["peak_mb"] * devices),
        "runtime_min": {"gpu": "not measured (no GPU here): GPU throughput unknown",
                        "cpu_one_thread_per_epoch": round(per_epoch / 60, 1),
                        "cpu_one_thread_at_max_epochs": round(per_epoch * epochs / 60, 1)},
        "cpu_hours": round(jobs * per_epoch * epochs / 3600, 1),
        "cpu_hours_per_epoch": round(jobs * per_epoch / 3600, 2),
        "basis": (f"measured on this CPU, one torch thread, batch {training['batch_size']}: "
                  f"{model['train_cpu_s_per_example'] * 1e3:.3f} ms per training {unit} (loading, forward, loss, "
                  f"backward, Adam), {model['val_cpu_s_per_example'] * 1e3:.3f} ms per validation {unit}; "
                  f"x {train_examples:,.0f} train + {val_examples:,.0f} val per epoch, x max_epochs (early "
                  f"stopping may end sooner). Memory: {devices} processes per node x the peak of one CPU "
                  f"process; the CUDA runtime's host memory and the GPU memory are not measured"),
    }


def derived_job(jobs: int, seconds: float, peak_mb: float, basis: str, threads: int = 1) -> dict:
    return {"jobs": jobs, "gpus": 0, "threads": threads, "peak_mb": round(peak_mb), "mem_mb": request_mb(peak_mb),
            "runtime_min": round(seconds / 60, 1), "cpu_hours": round(jobs * seconds / 3600, 2), "basis": basis}


def counts(config: dict, m: dict, sample: str, split: bool = True) -> dict:
    """Events and expected examples (jets or event images; per split where the sample is split)
    of a sample of the paper configuration: events_per_shard x shards x the measured examples per event."""
    s = config["samples"][sample]
    events = s["events_per_shard"] * s["shards"]
    examples = events * m["samples"][sample]["examples_per_event"]
    out = {"events_per_shard": s["events_per_shard"], "shards": s["shards"], "events": events,
           "examples_per_event": m["samples"][sample]["examples_per_event"],
           "examples_per_event_rel_error": m["samples"][sample]["examples_per_event_rel_error"],
           "examples": round(examples)}
    if split:
        out.update({f"{name}_examples": round(examples * config["split"][name]) for name in ("train", "val", "test")})
    return out


def gen_jobs(config: dict, m: dict, sample: str, detector: str | None, chunk: float | None) -> dict:
    s = config["samples"][sample]
    bench = m["samples"][sample]["bench_events"]
    jobs = {f"generate[{sample}]": shard_job(m["steps"]["generate"][sample], s["events_per_shard"], bench,
                                              s["shards"], s["batch_size"], "event")}
    if detector:
        jobs[f"{detector}[{sample}]"] = shard_job(m["steps"][detector][sample], s["events_per_shard"], bench,
                                                  s["shards"], chunk, "event")
    return jobs


def model_peak(m: dict, prefix: str) -> float:
    return max(v["peak_mb"] for k, v in m["models"].items() if k.startswith(prefix))


def estimate_vertexing(config: dict, m: dict) -> dict:
    from pipeline.ml.trainer import study_training_config

    sample = config["vertexing"]["sample"]
    c = counts(config, m, sample)
    bench = m["samples"][sample]
    jobs = gen_jobs(config, m, sample, "simulate_tracker", CHUNK_EVENTS["simulate_tracker"])
    jobs["split"] = shard_job(m["steps"]["split"][sample], c["events"], bench["bench_events"], 1,
                              CHUNK_EVENTS["split"], "event")
    jobs["plot_validation"] = shard_job(m["steps"]["plot_validation"][sample],
                                        c["events"] * bench["generated_jets_per_event"],
                                        bench["bench_events"] * bench["generated_jets_per_event"], 1, 50_000, "jet")
    jobs["build_graphs_vertexing"] = shard_job(m["steps"]["build_graphs"][sample], c["events"],
                                               bench["bench_events"], 1, None, "event")
    peak, how = extrapolated_peak(m["steps"]["build_graphs"][sample], bench["examples"], CHUNK_JETS["build_graphs"])
    jobs["build_graphs_vertexing"].update(peak_mb=round(peak), mem_mb=request_mb(peak))
    jobs["build_graphs_vertexing"]["basis"] = jobs["build_graphs_vertexing"]["basis"].split("; memory")[0] + \
        f"; memory {how} jets"
    training = config["training"]
    for method in ("track_pair", "rnn", "set2graph"):
        jobs[f"train_vertexing[{method}]"] = training_job(m["models"][f"vertexing.{method}"], c["train_examples"],
                                                          c["val_examples"], training, 1)
    ft = study_training_config(config, "flavour_tagging")["training"]
    seeds = config["flavour_tagging"]["seeds"]
    tagger = m["models"]["flavour_tagging.baseline"]
    jobs["train_flavour_tagging[each of 6 methods]"] = training_job(tagger, c["train_examples"], c["val_examples"], ft,
                                                                    6 * seeds)
    all_jets = c["examples"]
    for finder in ("avr", "baseline"):
        step = m["steps"]["score_edges"][finder]
        jobs[f"score_edges_flavour_tagging[{finder}]"] = shard_job(step, all_jets, bench["examples"], 1,
                                                                   None, "jet")
    threads = config["evaluation"]["threads"]
    for method in ("track_pair", "rnn", "set2graph"):
        model = m["models"][f"vertexing.{method}"]
        seconds = all_jets * model["val_cpu_s_per_example"]
        jobs[f"score_edges_flavour_tagging[{method}]"] = derived_job(
            1, seconds, model["peak_mb"], f"derived: {all_jets:,} jets x the measured validation forward pass "
            f"({model['val_cpu_s_per_example'] * 1e3:.3f} ms CPU per jet, one thread; the step runs on "
            f"evaluation.threads = {threads}); memory: the training process's peak (an upper bound)", threads)
    test = c["test_examples"]
    per_jet = sum(m["models"][f"vertexing.{k}"]["val_cpu_s_per_example"] for k in ("track_pair", "rnn", "set2graph"))
    per_jet += sum(m["steps"]["score_edges"][f]["cpu_s"] / bench["examples"] for f in ("avr", "baseline"))
    jobs["evaluate_vertexing"] = derived_job(1, test * per_jet, model_peak(m, "vertexing."),
                                             f"derived: {test:,} test jets x the five finders' measured costs "
                                             f"({per_jet * 1e3:.3f} ms CPU per jet); the metrics' own cost and memory "
                                             "for the stored predictions not measured (memory: the largest training "
                                             "process's peak, a lower bound)", threads)
    tagger_jet = tagger["val_cpu_s_per_example"]
    jobs["evaluate_flavour_tagging"] = derived_job(1, test * tagger_jet * 6 * seeds, tagger["peak_mb"],
                                                   f"derived: {test:,} test jets x {6 * seeds} taggers x "
                                                   f"{tagger_jet * 1e3:.3f} ms CPU per jet (measured forward); "
                                                   "memory: one tagger's training process (a lower bound)", threads)
    return {"counts": {sample: c}, "jobs": jobs}


def estimate_jet_images(config: dict, m: dict) -> dict:
    from pipeline.ml.trainer import study_training_config

    signal, background = config["jet_images"]["signal"], config["jet_images"]["background"]
    c = {s: counts(config, m, s) for s in (signal, background)}
    jobs = {}
    for s in (signal, background):
        jobs.update(gen_jobs(config, m, s, "simulate_calorimeter", CHUNK_EVENTS["simulate_calorimeter"]))
        bench = m["samples"][s]
        jobs[f"build_jet_images[{s}]"] = shard_job(m["steps"]["build_jet_images"][s],
                                                   config["samples"][s]["events_per_shard"], bench["bench_events"],
                                                   config["samples"][s]["shards"], CHUNK_EVENTS["build_jet_images"],
                                                   "event")
    total = sum(c[s]["examples"] for s in c)
    bench_jets = sum(m["samples"][s]["examples"] for s in c)
    jobs["split_jet_images"] = shard_job(m["steps"]["split_jet_images"]["all"], total, bench_jets, 1,
                                         CHUNK_EVENTS["split_jet_images"], "jet")
    jobs["plot_jet_images"] = derived_job(1, m["steps"]["plot_jet_images"]["all"]["cpu_s"]
                                          + m["steps"]["plot_jet_images"]["all"]["startup_s"],
                                          m["steps"]["plot_jet_images"]["all"]["peak_mb"],
                                          "measured on the bench's train split (it reads a fixed number of images: "
                                          "assumed not to grow with the data set)")
    training = study_training_config(config, "jet_images")["training"]
    train = sum(c[s]["train_examples"] for s in c)
    val = sum(c[s]["val_examples"] for s in c)
    per_jet_infer = 0.0
    for method in ("mlp", "cnn", "autoencoder", "autoencoder_inverse", "denoising_autoencoder"):
        model = m["models"][f"jet_images.{method}"]
        # The autoencoders train on one class only.
        share = {"autoencoder": c[background]["train_examples"] / max(train, 1),
                 "autoencoder_inverse": c[signal]["train_examples"] / max(train, 1)}.get(method, 1.0)
        jobs[f"train_jet_images[{method}]"] = training_job(model, train * share, val * share, training, 1)
        per_jet_infer += model["val_cpu_s_per_example"]
    test = sum(c[s]["test_examples"] for s in c)
    jobs["evaluate_jet_images"] = derived_job(1, test * per_jet_infer, model_peak(m, "jet_images."),
                                              f"derived: {test:,} test jets x the five models' measured forward "
                                              f"passes ({per_jet_infer * 1e3:.3f} ms CPU per jet, one thread); memory: "
                                              "the largest training process's peak (a lower bound)",
                                              config["evaluation"]["threads"])
    return {"counts": c, "jobs": jobs}


def estimate_particle_flow(config: dict, m: dict) -> dict:
    from pipeline.ml.trainer import study_training_config

    sample, calibration = config["particle_flow"]["sample"], config["particle_flow"]["calibration"]
    c = {sample: counts(config, m, sample), calibration: counts(config, m, calibration, split=False)}
    jobs = {}
    for s in (sample, calibration):
        jobs.update(gen_jobs(config, m, s, None, None))
        jobs[f"build_particle_flow[{s}]"] = shard_job(m["steps"]["build_particle_flow"][s],
                                                      config["samples"][s]["events_per_shard"],
                                                      m["samples"][s]["bench_events"], config["samples"][s]["shards"],
                                                      CHUNK_EVENTS["build_images"], "event")
    jobs["split_particle_flow"] = shard_job(m["steps"]["split_particle_flow"][sample], c[sample]["examples"],
                                            m["samples"][sample]["examples"], 1, CHUNK_EVENTS["split"], "event")
    jobs["calibrate_particle_flow"] = shard_job(m["steps"]["calibrate_particle_flow"][calibration],
                                                c[calibration]["examples"], m["samples"][calibration]["examples"], 1,
                                                None, "event")
    training = study_training_config(config, "particle_flow")["training"]
    infer = 0.0
    for method in ("cnn", "cnn_no_track", "graph"):
        model = m["models"][f"particle_flow.{method}"]
        jobs[f"train_particle_flow[{method}]"] = training_job(model, c[sample]["train_examples"],
                                                              c[sample]["val_examples"], training, 1, "event")
        infer += model["val_cpu_s_per_example"]
    sub = m["steps"]["parametrised_subtraction"][sample]
    infer += sub["cpu_s"] / sub["events"]
    test = c[sample]["test_examples"]
    jobs["evaluate_particle_flow"] = derived_job(1, test * infer, model_peak(m, "particle_flow."),
                                                 f"derived: {test:,} test events x (the three networks' measured "
                                                 f"forward passes + the measured parametrised subtraction) = "
                                                 f"{infer * 1e3:.2f} ms CPU per event; memory: the largest training "
                                                 "process's peak (a lower bound)", config["evaluation"]["threads"])
    return {"counts": c, "jobs": jobs}


def estimate_super_resolution(config: dict, m: dict) -> dict:
    from pipeline.ml.trainer import study_training_config

    samples = (config["super_resolution"]["sample"], config["super_resolution"]["pi0_sample"])
    c = {s: counts(config, m, s) for s in samples}
    jobs = {}
    for s in samples:
        jobs.update(gen_jobs(config, m, s, None, None))
        jobs[f"build_super_resolution[{s}]"] = shard_job(m["steps"]["build_super_resolution"][s],
                                                         config["samples"][s]["events_per_shard"],
                                                         m["samples"][s]["bench_events"],
                                                         config["samples"][s]["shards"], CHUNK_EVENTS["build_images"],
                                                         "event")
        jobs[f"split_super_resolution[{s}]"] = shard_job(m["steps"]["split_super_resolution"][s],
                                                         c[s]["examples"], m["samples"][s]["examples"], 1,
                                                         CHUNK_EVENTS["split"], "event")
    training = study_training_config(config, "super_resolution")["training"]
    train = sum(c[s]["train_examples"] for s in samples)
    val = sum(c[s]["val_examples"] for s in samples)
    infer = 0.0
    for method in ("redistribute", "cnn"):
        model = m["models"][f"super_resolution.{method}"]
        jobs[f"train_super_resolution[{method}]"] = training_job(model, train, val, training, 1, "event")
        infer += model["val_cpu_s_per_example"]
    test = sum(c[s]["test_examples"] for s in samples)
    jobs["evaluate_super_resolution"] = derived_job(1, test * infer, model_peak(m, "super_resolution."),
                                                    f"derived: {test:,} test events x the two networks' measured "
                                                    f"forward passes ({infer * 1e3:.2f} ms CPU per event); the "
                                                    "interpolations and metrics not measured; memory: the larger "
                                                    "training process's peak (a lower bound)",
                                                    config["evaluation"]["threads"])
    return {"counts": c, "jobs": jobs}


def declared_resources(study: str) -> dict[str, dict[str, int]]:
    """{rule: {mem_mb, runtime, gpu}} the workflow's rules ask for with the paper configuration
    (the largest over a rule's jobs, the first attempt), from a dry run; {} if it fails."""
    import re

    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--directory", tmp, "--configfile",
                               str(PAPER / f"{study}.yaml")], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"  (the dry run failed; the rules' own requests are not compared)\n{done.stderr[-2000:]}")
        return {}
    declared: dict[str, dict[str, int]] = {}
    rule = None
    for line in (done.stdout + done.stderr).splitlines():
        match = re.match(r"(?:local)?rule (\w+):", line)
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            values = dict(item.split("=", 1) for item in line.split(":", 1)[1].strip().split(", ") if "=" in item)
            entry = declared.setdefault(rule, {})
            for key in ("mem_mb", "runtime", "gpu"):
                if values.get(key, "").isdigit():
                    entry[key] = max(entry.get(key, 0), int(values[key]))
    return declared


def compare_with_rules(jobs: dict, declared: dict) -> None:
    """Add to each job class what its rule asks for, and which of our estimates exceed that
    (a training's runtime is not compared: its GPU runtime is unknown)."""
    for name, job in jobs.items():
        asked = declared.get(name.split("[")[0])
        if not asked:
            continue
        job["rule_asks"] = {"mem_mb": asked.get("mem_mb"), "runtime_min": asked.get("runtime"),
                            "gpus": asked.get("gpu", 0)}
        above = []
        if asked.get("mem_mb") and job["mem_mb"] > asked["mem_mb"]:
            above.append("mem_mb")
        if asked.get("runtime") and not isinstance(job["runtime_min"], dict) and job["runtime_min"] > asked["runtime"]:
            above.append("runtime")
        job["estimate_above_rule"] = above


ESTIMATE = {"vertexing": estimate_vertexing, "jet_images": estimate_jet_images,
            "particle_flow": estimate_particle_flow, "super_resolution": estimate_super_resolution}


def disk(config: dict, m: dict, estimate: dict) -> dict:
    """GB on disk of each kind of file at the paper configuration's size (bytes per event or jet x
    counts; the split files of the jet images and the particle-flow images copy their shards again)."""
    out = {}
    for sample, c in estimate["counts"].items():
        bench = m["samples"][sample]
        for kind, per_event in bench.get("bytes_per_event", {}).items():
            out[f"{sample}.{kind}"] = round(per_event * c["events"] / 1e9, 2)
        for kind, per_jet in bench.get("bytes_per_example", {}).items():
            if kind == "vertex_edges":  # measured for one finder; one file set per vertex finder
                from pipeline.studies.vertexing.methods import METHODS

                per_jet, kind = per_jet * len(METHODS), f"vertex_edges ({len(METHODS)} finders)"
            out[f"{sample}.{kind}"] = round(per_jet * c["examples"] / 1e9, 2)
    return out


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": "none", "torch": str(torch.__version__),
            "python": platform.python_version(), "torch_threads_per_process": 1}


HEADER = """\
# Job resources of workflow/configs/paper/{study}.yaml, written by bench/paper_resources.py.
# MEASURED ON A {cores}-CORE CPU WITHOUT A GPU ({cpu}) on {date}: per-event and per-jet costs
# of the real steps on {bench} (one process each, one torch thread), scaled to the
# configuration's events, shards, splits and epochs. GPU RUNTIMES ARE NOT MEASURED: a training's
# runtime is given in CPU hours (one thread); GPU throughput is unknown here and no GPU speed-up
# is assumed. CPU times on this shared machine vary by about 20 % from run to run. mem_mb = peak
# x {margin} (our margin), rounded up to 100 MB; rule_asks: what the workflow's rule asks for
# (a dry run of the configuration), estimate_above_rule: where ours is more. Recompute after
# changing the configuration's counts: python bench/paper_resources.py --reuse --studies {study}
"""


def write_resources(study: str, config: dict, m: dict, estimate: dict, when: str, host: dict) -> Path:
    path = PAPER / f"{study}.resources.yaml"
    bench = ", ".join(f"{n} {s} events" for s, n in BENCH_EVENTS[study].items())
    doc = {"study": study, "config": f"workflow/configs/paper/{study}.yaml", "measured_on": {"date": when, **host},
           "counts": estimate["counts"], "disk_gb": disk(config, m, estimate), "jobs": estimate["jobs"],
           "measurements": m}
    text = HEADER.format(study=study, cores=host["cores"], cpu=host["cpu"], date=when, bench=bench,
                         margin=MEMORY_MARGIN)
    path.write_text(text + yaml.safe_dump(_rounded(doc), sort_keys=False, width=120))
    return path


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def print_table(study: str, estimate: dict) -> None:
    print(f"\n{study} (workflow/configs/paper/{study}.yaml): CPU measured here, GPU not measured")
    print(f"  {'job class':42} {'jobs':>5} {'GPUs':>4} {'mem MB':>7} {'runtime/job [min]':>20} {'CPU h':>8}"
          f"  {'rule asks (MB, min)':>19}")
    for name, job in estimate["jobs"].items():
        runtime = job["runtime_min"]
        if isinstance(runtime, dict):
            shown = f"{runtime['cpu_one_thread_at_max_epochs']:,.0f} CPU, GPU ?"
        else:
            shown = f"{runtime:,.1f}"
        asked = job.get("rule_asks", {})
        flag = "  <- estimate above" if job.get("estimate_above_rule") else ""
        print(f"  {name:42} {job['jobs']:5d} {job['gpus']:4d} {job['mem_mb']:7d} {shown:>20} {job['cpu_hours']:8,.1f}"
              f"  {asked.get('mem_mb', '?'):>9}, {asked.get('runtime_min', '?'):>7}{flag}")
    for sample, c in estimate["counts"].items():
        split = (f" (train {c['train_examples']:,}, val {c['val_examples']:,}, test {c['test_examples']:,})"
                 if "train_examples" in c else " (not split)")
        print(f"  {sample}: {c['events']:,} events ({c['shards']} x {c['events_per_shard']:,}) x "
              f"{c['examples_per_event']:.3f} -> {c['examples']:,}{split}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", nargs="+", choices=STUDIES, default=list(STUDIES))
    parser.add_argument("--reuse", action="store_true",
                        help="recompute from the measurements stored in the resources files (no measuring)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the bench files here (default: temporary)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    host = machine()
    started = time.perf_counter()
    for study in args.studies:
        config = paper_config(study)
        if args.reuse:
            stored = yaml.safe_load((PAPER / f"{study}.resources.yaml").read_text())
            m, when = stored["measurements"], stored["measured_on"]["date"]
            host = {k: v for k, v in stored["measured_on"].items() if k != "date"}
        else:
            print(f"{study}: measuring ({', '.join(f'{n} {s} events' for s, n in BENCH_EVENTS[study].items())})")
            when = datetime.date.today().isoformat()
            with (tempfile.TemporaryDirectory() if args.workdir is None else _kept(args.workdir / study)) as workdir:
                m = MEASURE[study](Path(workdir))
                (Path(workdir) / "measurements.json").write_text(json.dumps(m))
        estimate = ESTIMATE[study](config, m)
        compare_with_rules(estimate["jobs"], declared_resources(study))
        path = write_resources(study, config, m, estimate, when, host)
        print_table(study, estimate)
        print(f"  written: {path.relative_to(ROOT)}")
    print(f"\n{time.perf_counter() - started:.0f} s")


class _kept:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.mkdir(parents=True, exist_ok=True)
        return str(self.path)

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
