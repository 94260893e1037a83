"""Training throughput of every study's model: one process, two data-parallel processes (DDP,
gloo) and bf16 mixed precision, side by side, through the real training command.

    python bench/data_parallel.py [--epochs 3] [--accelerator cpu] [--markdown FILE]

For each study a real data file in the study's own format (track graphs of generated ttbar
events, jet images, gun events' calorimeter windows), the schema's default network, and
``pipeline <study> train`` run with each setting below. An epoch's time is read from the
MLflow run the training logs (the timestamps of its per-epoch ``val_loss``, so the start-up,
imports and process launch are not counted); the throughput is training items (jets,
images, events) per second of an epoch, the median over epochs 2..E. On a 2-core machine
two processes of one thread use both cores, as one process of two threads does: the
comparison of those two rows is the data-parallel overhead; "1 x 1" is the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

#: (label, training settings): processes x threads each, precision.
SETTINGS = [
    ("1 process x 1 thread", {"devices": 1, "threads": 1}),
    ("1 process x 2 threads", {"devices": 1, "threads": 2}),
    ("2 processes x 1 thread (DDP)", {"devices": 2, "threads": 1}),
    ("1 process x 1 thread, bf16-mixed", {"devices": 1, "threads": 1, "precision": "bf16-mixed"}),
]


def _jet_images(directory: Path):
    from test_image_models import image_config, write_images

    config = image_config(directory)
    config["jet_images"].pop("mlp"), config["jet_images"].pop("cnn")  # the schema's default networks
    config["jet_images"]["training"] = {"batch_size": 128}
    files = {"train": write_images(directory / "train.h5", 16384, seed=1),
             "val": write_images(directory / "val.h5", 1024, seed=2)}
    return config, files, "cnn", 16384


def _jets(path: Path) -> int:
    with h5py.File(path) as f:
        return len(f["jets/flavour"])


#: ttbar events whose jets both track-set studies train on (generated once).
TTBAR_EVENTS = 2000
_made: dict[str, tuple] = {}


def _ttbar_jets(directory: Path) -> tuple[dict, dict]:
    from pipeline.tiny import tiny_config, write_tiny_dataset, write_tiny_track_graphs

    if "ttbar" not in _made:
        config = tiny_config(events_per_shard=TTBAR_EVENTS, shards=1, seed=5)
        graphs = write_tiny_track_graphs(directory, config, write_tiny_dataset(directory, config)["track_jets"])
        _made["ttbar"] = config, {"train": graphs["train"], "val": graphs["val"]}
    return _made["ttbar"]


def _vertexing(directory: Path):
    config, files = _ttbar_jets(directory)
    return config, files, "set2graph", _jets(files["train"])


def _flavour_tagging(directory: Path):
    config, files = _ttbar_jets(directory)
    return config, files, "no_vertex", _jets(files["train"])


def _particle_flow(directory: Path):
    from test_particle_flow import PI_PLUS, PI_ZERO_OFFSET, gun_config, images_of

    config = gun_config([PI_PLUS, PI_ZERO_OFFSET], events=256)
    *_, path = images_of(directory, config)
    config["particle_flow"]["training"] = {"batch_size": 32}
    return config, {"train": path, "val": path}, "graph", 256


def _super_resolution(directory: Path):
    from test_super_resolution_models import images_of, study_config

    config = study_config(directory)
    config["samples"]["pflow"]["events_per_shard"] = 256
    config["super_resolution"].pop("network")  # the schema's default network
    config["super_resolution"]["training"] = {"batch_size": 32}
    from pipeline.run_config import resolve_config

    config = resolve_config(config)
    path = images_of(directory, config, "pflow", "pflow")
    return config, {"train": [path], "val": [path]}, "cnn", 256


STUDIES = {"vertexing": _vertexing, "flavour_tagging": _flavour_tagging, "jet_images": _jet_images,
           "particle_flow": _particle_flow, "super_resolution": _super_resolution}


def epoch_seconds(directory: Path, checkpoint: Path) -> list[float]:
    """Seconds between consecutive epochs' val_loss in the training's MLflow run."""
    from mlflow.tracking import MlflowClient

    from pipeline.ml.checkpoints import checkpoint_run_id

    client = MlflowClient(f"sqlite:///{directory}/mlflow.db")
    stamps = sorted(m.timestamp for m in client.get_metric_history(checkpoint_run_id(checkpoint), "val_loss"))
    return [(b - a) / 1000 for a, b in zip(stamps, stamps[1:])]


def measure(study: str, directory: Path, config: dict, files: dict, method: str, items: int, epochs: int,
            accelerator: str, label: str, settings: dict) -> dict:
    run = directory / label.split(",")[0].replace(" ", "_") / (settings.get("precision", "32"))
    run.mkdir(parents=True, exist_ok=True)
    training = {**config["training"], "accelerator": accelerator, "max_epochs": epochs, "patience": epochs,
                "resume_dir": str(run / "resume"), **settings}
    resolved = {**config, "training": training,
                "mlflow": {**config["mlflow"], "tracking_uri": f"sqlite:///{run}/mlflow.db"}}
    if "training" in resolved.get(study, {}):  # the study's own overrides, where it has them
        resolved[study] = {**resolved[study], "training": {**resolved[study]["training"], "max_epochs": epochs}}
    path = run / "config.yaml"
    path.write_text(yaml.safe_dump(resolved))
    command = [sys.executable, "-m", "pipeline", study, "train", "--config", str(path), "--method", method]
    for split in ("train", "val"):
        command += [f"--{split}", *map(str, files[split] if isinstance(files[split], list) else [files[split]])]
    checkpoint = run / f"{method}.ckpt"
    command += ["--checkpoint", str(checkpoint), "--history", str(run / "history.csv"), "--quiet"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{study} {label}: {result.stderr[-2000:]}")
    seconds = statistics.median(epoch_seconds(run, checkpoint))
    return {"study": study, "model": method, "setting": label, "epoch_s": seconds, "items_per_s": items / seconds,
            "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--studies", nargs="+", default=list(STUDIES))
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for study in args.studies:
            directory = Path(tmp) / study
            directory.mkdir()
            config, files, method, items = STUDIES[study](directory)
            config["mlflow"] = {**config.get("mlflow", {}), "tracking_uri": f"sqlite:///{directory}/mlflow.db"}
            for label, settings in SETTINGS:
                row = measure(study, directory, config, files, method, items, args.epochs, args.accelerator,
                              label, settings)
                rows.append(row)
                print(f"{study:17s} {method:10s} {label:34s} {row['epoch_s']:7.2f} s/epoch "
                      f"{row['items_per_s']:9.0f} items/s  (command {row['wall_s']:.0f} s)", flush=True)
    lines = ["| study | model | setting | s per epoch | items/s | vs 1 x 1 |", "|---|---|---|---:|---:|---:|"]
    for row in rows:
        base = next(r for r in rows if r["study"] == row["study"] and r["setting"] == SETTINGS[0][0])
        lines.append(f"| {row['study']} | {row['model']} | {row['setting']} | {row['epoch_s']:.2f} | "
                     f"{row['items_per_s']:.0f} | {row['items_per_s'] / base['items_per_s']:.2f} |")
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
