"""The computer-vision particle flow (Di Bello et al., "Towards a computer vision particle
flow", EPJC 81 (2021) 107): the neutral energy of overlapping pi+ pi0 showers, a UNet and a
graph network against ATLAS's parametrised subtraction."""

from __future__ import annotations

from pipeline.studies.descriptor import Study, present, run_names, shards
from pipeline.studies.particle_flow.methods import BASELINE, LEARNED, METHODS

FIGURES = ["response", "resolution", *(f"event_display_{i}" for i in range(3))]


def samples(config) -> list[str]:
    """[events sample, calibration sample] (particle guns) if the config defines both."""
    return present(config, config["particle_flow"]["sample"], config["particle_flow"]["calibration"])


def outputs(config) -> list[str]:
    return [*(f"results/particle_flow/{table}.csv" for table in ("metrics", "distance", "cell_mse")),
            "results/particle_flow/metrics.md",
            *(f"results/particle_flow/{name}.{ext}" for name in FIGURES for ext in ("png", "pdf"))]


def _check(config) -> None:
    from pipeline.studies.particle_flow.checks import check  # here: descriptors stay light for `pipeline --help`

    check(config)


STUDY = Study(
    name="particle_flow",
    summary="computer-vision particle flow: the neutral energy of pi+ pi0 showers, CNN and graph vs ATLAS's "
            "subtraction",
    methods=METHODS,
    learned=LEARNED,
    samples=samples,
    outputs=outputs,
    jobs=lambda config: {"build_particle_flow": shards(config, *samples(config)), "split_particle_flow": 1,
                         "calibrate_particle_flow": 1, "train_particle_flow": len(LEARNED),
                         "evaluate_particle_flow": 1},
    runs=lambda config: [*run_names("particle_flow", "calibrate", (BASELINE,)),
                         *run_names("particle_flow", "train", LEARNED),
                         *run_names("particle_flow", "evaluate", METHODS)],
    uses_tracker=False,
    check=_check,
)
