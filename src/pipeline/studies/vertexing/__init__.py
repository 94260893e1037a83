"""Secondary-vertex finding in jets (Shlomi et al., "Secondary vertex finding in jets with
neural networks", EPJC 81 (2021) 540): Set2Graph and its baselines on track sets."""

from __future__ import annotations

from pipeline.datasets import file_samples
from pipeline.studies import tracking_samples
from pipeline.studies.descriptor import Study, run_names
from pipeline.studies.vertexing.methods import LEARNED, METHODS, TRIVIAL_PARTITIONS

OUTPUTS = [f"results/vertexing/{name}" for name in
           ("metrics.csv", "table.md", "table.tex", "f1_vs_tracks.png", "f1_vs_tracks.pdf", "predictions.h5")]


def track_set_samples(config) -> list[str]:
    """The samples whose jets the vertex finders can read: those that go through the tracker,
    then the Set2Graph data set's files (``pipeline.datasets``)."""
    return [*tracking_samples(config), *file_samples(config, "vertexing")]


def _derive(config: dict) -> None:
    """``vertexing.sample: null``: the first sample that goes through the tracker, else a file
    sample of the Set2Graph jets (none: the study is off)."""
    if config["vertexing"]["sample"] is None:
        config["vertexing"]["sample"] = next(iter(track_set_samples(config)), None)


def _check(config) -> None:
    section = config["vertexing"]
    if section["sample"] is not None and section["sample"] not in config["samples"]:
        raise ValueError(f"vertexing.sample: unknown sample {section['sample']!r}, "
                         f"expected one of {sorted(config['samples'])}")
    if section["sample"] is not None and section["sample"] not in track_set_samples(config):
        raise ValueError(f"vertexing.sample: {section['sample']!r} has no track sets (a particle gun, another "
                         f"study's calorimeter sample or another data set's files); expected one of "
                         f"{track_set_samples(config)}")
    if section["max_tracks"] < section["min_tracks"]:
        raise ValueError(f"vertexing.max_tracks ({section['max_tracks']}) is below vertexing.min_tracks "
                         f"({section['min_tracks']})")


def samples(config) -> list[str]:
    """[the tracked sample whose jets the vertex finders read], or [] where the config has none."""
    return [] if config["vertexing"]["sample"] is None else [config["vertexing"]["sample"]]


STUDY = Study(
    name="vertexing",
    summary="secondary vertices in jets: track sets, Set2Graph and its baselines, the EPJC paper's metrics",
    methods=METHODS,
    learned=LEARNED,
    samples=samples,
    outputs=lambda config: OUTPUTS,
    jobs=lambda config: {"build_graphs_vertexing": 1, "train_vertexing": len(LEARNED), "evaluate_vertexing": 1},
    runs=lambda config: [*run_names("vertexing", "train", LEARNED),
                         *run_names("vertexing", "evaluate", (*METHODS, *TRIVIAL_PARTITIONS))],
    derive=_derive,
    check=_check,
)
