"""Boosted top against QCD jets as calorimeter images: MLP and CNN taggers (Kasieczka et
al., "The Machine Learning Landscape of Top Taggers", SciPost Phys. 7 (2019) 014) and
autoencoders as anomaly detectors (Farina, Nakai, Shih, PRD 101 (2020) 075021; Heimel et
al., "QCD or What?", SciPost Phys. 6 (2019) 030; Finke et al., JHEP 06 (2021) 161)."""

from __future__ import annotations

from pipeline.studies.descriptor import Study, present, run_names, shards
from pipeline.studies.jet_images.methods import LEARNED, METHODS


def samples(config) -> list[str]:
    """[signal, background] if the config defines both: they go through the calorimeter, not the tracker."""
    return present(config, config["jet_images"]["signal"], config["jet_images"]["background"])


def outputs(config) -> list[str]:
    figures = ["average_images", "single_jets", "roc", "autoencoder_roc", "reconstruction", "denoising"]
    return [*(f"results/jet_images/data/{split}.h5" for split in ("train", "val", "test")),
            *(f"results/jet_images/{name}.{ext}" for name in figures[:2] for ext in ("png", "pdf")),
            *(f"results/jet_images/{table}.{ext}" for table in ("taggers", "autoencoder", "denoising")
              for ext in ("csv", "md")),
            *(f"results/jet_images/{name}.{ext}" for name in figures[2:] for ext in ("png", "pdf"))]


def _check(config) -> None:
    for key in ("signal", "background"):
        name = config["jet_images"][key]
        if name in config["samples"] and not config["samples"][name]["particles"]["store"]:
            raise ValueError(f"samples.{name}.particles.store: the jet-image study's {key} sample needs its "
                             f"particles for the calorimeter; expected true")


def _jobs(config) -> dict[str, int]:
    images = shards(config, *samples(config))
    return {"simulate_calorimeter": images, "build_jet_images": images, "split_jet_images": 1,
            "plot_jet_images": 1, "train_jet_images": len(LEARNED), "evaluate_jet_images": 1}


STUDY = Study(
    name="jet_images",
    summary="top vs QCD jet images from the calorimeter: MLP and CNN taggers, autoencoders",
    methods=METHODS,
    learned=LEARNED,
    samples=samples,
    outputs=outputs,
    jobs=_jobs,
    runs=lambda config: [*run_names("jet_images", "train", LEARNED), *run_names("jet_images", "evaluate", METHODS)],
    uses_tracker=False,
    check=_check,
)
