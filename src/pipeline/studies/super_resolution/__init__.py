"""Calorimeter super-resolution (the second half of Di Bello et al., EPJC 81 (2021) 107):
the fine cells of a shower from the detector's coarse ones, by interpolation and by networks,
judged by the photon pairs and diphoton masses of single pi0s they recover."""

from __future__ import annotations

from pipeline.studies import active
from pipeline.studies.descriptor import Study, present, run_names, shards
from pipeline.studies.super_resolution.methods import LEARNED, METHODS


def samples(config) -> list[str]:
    """[sample, pi0 sample] (particle guns) if the config defines both."""
    return present(config, config["super_resolution"]["sample"], config["super_resolution"]["pi0_sample"])


def downstream(config) -> bool:
    """Whether the particle-flow CNN is fed the super-resolved images too: where that study runs."""
    return active("particle_flow", config)


def outputs(config) -> list[str]:
    extra = ["downstream"] if downstream(config) else []
    figures = ["psnr", "mass", *(f"event_display_{i}" for i in range(2)), *(f"{name}_resolution" for name in extra)]
    return [*(f"results/super_resolution/{table}.{ext}" for table in ["metrics", "physics", "shower_shapes", *extra]
              for ext in ("csv", "md")),
            *(f"results/super_resolution/{name}.{ext}" for name in figures for ext in ("png", "pdf"))]


def _check(config) -> None:
    from pipeline.studies.super_resolution.checks import check  # here: descriptors stay light for `pipeline --help`

    check(config)


STUDY = Study(
    name="super_resolution",
    summary="calorimeter super-resolution: fine cells from the detector's, judged by the photon pairs they resolve",
    methods=METHODS,
    learned=LEARNED,
    samples=samples,
    outputs=outputs,
    jobs=lambda config: {"build_super_resolution": shards(config, *samples(config)),
                         "split_super_resolution": len(set(samples(config))),
                         "train_super_resolution": len(LEARNED), "evaluate_super_resolution": 1},
    runs=lambda config: [*run_names("super_resolution", "train", LEARNED),
                         *run_names("super_resolution", "evaluate", METHODS)],
    # Its images are the particle-flow study's format; downstream, that study's CNN reads them.
    reads=("particle_flow",),
    uses_tracker=False,
    check=_check,
)
