"""Boosted top against QCD jets as calorimeter images: MLP and CNN taggers (Kasieczka et
al., "The Machine Learning Landscape of Top Taggers", SciPost Phys. 7 (2019) 014) and
autoencoders as anomaly detectors (Farina, Nakai, Shih, PRD 101 (2020) 075021; Heimel et
al., "QCD or What?", SciPost Phys. 6 (2019) 030; Finke et al., JHEP 06 (2021) 161)."""

from __future__ import annotations

from pipeline.datasets import dataset
from pipeline.studies.descriptor import Study, present, run_names, shards
from pipeline.studies.jet_images.methods import LEARNED, METHODS


def samples(config) -> list[str]:
    """[signal, background] if the config defines both: they go through the calorimeter, not the tracker;
    or twice the one sample of the top-tagging reference data set's files, which hold both classes."""
    return present(config, config["jet_images"]["signal"], config["jet_images"]["background"])


def reference_sample(config) -> str | None:
    """The top-tagging reference data set's sample the study reads, if it reads one (not generated ones)."""
    names = samples(config)
    return names[0] if names and dataset(config["samples"][names[0]]) else None


def outputs(config) -> list[str]:
    figures = ["average_images", "single_jets", "roc", "autoencoder_roc", "reconstruction", "denoising"]
    return [*(f"results/jet_images/data/{split}.h5" for split in ("train", "val", "test")),
            *(f"results/jet_images/{name}.{ext}" for name in figures[:2] for ext in ("png", "pdf")),
            *(f"results/jet_images/{table}.{ext}" for table in ("taggers", "autoencoder", "denoising")
              for ext in ("csv", "md")),
            *(f"results/jet_images/{name}.{ext}" for name in figures[2:] for ext in ("png", "pdf"))]


def _check(config) -> None:
    study = config["jet_images"]
    for key in ("signal", "background"):
        name = study[key]
        found = dataset(config["samples"][name]) if name in config["samples"] else None
        if found is not None and (found.study != "jet_images" or study["signal"] != study["background"]):
            raise ValueError(f"jet_images.{key}: {name!r} is a {found.name} file sample; expected a generated sample, "
                             "or a top_tagging file sample named by both jet_images.signal and jet_images.background "
                             "(its files hold both classes)")
        if found is None and name in config["samples"] and not config["samples"][name]["particles"]["store"]:
            raise ValueError(f"samples.{name}.particles.store: the jet-image study's {key} sample needs its "
                             f"particles for the calorimeter; expected true")


def _jobs(config) -> dict[str, int]:
    if reference_sample(config):
        data = {"convert_jet_images": 1}
    else:
        images = shards(config, *samples(config))
        data = {"simulate_calorimeter": images, "build_jet_images": images, "split_jet_images": 1}
    return {**data, "plot_jet_images": 1, "train_jet_images": len(LEARNED), "evaluate_jet_images": 1}


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
