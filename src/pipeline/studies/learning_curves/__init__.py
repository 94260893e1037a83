"""Learning curves: the metric of a study's networks against the number of training jets,
on nested, seeded subsets of the study's own training split, several seeds per point, with
the paper's number and data size beside them (docs/learning_curves.md). It tells how much
of the distance to a paper the data size explains: the vertex finders' F1 per flavour
(Shlomi et al., EPJC 81 (2021) 540) and the top taggers' AUC and background rejection
(Kasieczka et al., SciPost Phys. 7 (2019) 014). Off unless ``learning_curves.studies``
names a study."""

from __future__ import annotations

from pipeline.studies.descriptor import Study, run_names
from pipeline.studies.learning_curves.methods import LEARNED, METHODS, STUDY_OF


def curved(config) -> list[str]:
    """The studies whose curves the config measures (``learning_curves.studies``) and that run."""
    from pipeline.studies import study  # here: the registry imports this module

    return [name for name in config["learning_curves"]["studies"] if study(name).samples(config)]


def methods(config) -> list[str]:
    """The methods the config measures: ``learning_curves.methods`` of the curved studies."""
    return [m for m in config["learning_curves"]["methods"] if STUDY_OF[m] in curved(config)]


def samples(config) -> list[str]:
    """The samples of the curved studies (none: the curves are off)."""
    from pipeline.studies import study

    return [sample for name in curved(config) for sample in study(name).samples(config)]


def _check(config) -> None:
    section = config["learning_curves"]
    fractions = section["fractions"]
    if sorted(set(fractions)) != list(fractions):
        raise ValueError(f"learning_curves.fractions: {fractions}, expected distinct fractions in increasing order")
    for name in section["studies"]:
        wanted = [m for m in section["methods"] if STUDY_OF[m] == name]
        if not wanted:
            raise ValueError(f"learning_curves.methods: none of {section['methods']} is a network of {name!r}, "
                             f"expected some of {[m for m in METHODS if STUDY_OF[m] == name]}")


def outputs(config) -> list[str]:
    files = ["curve.csv", "curve.md"]
    return [f"results/learning_curves/{name}" for name in files] + [
        f"results/learning_curves/{study}.{ext}" for study in curved(config) for ext in ("png", "pdf")]


def _points(config) -> int:
    return len(config["learning_curves"]["fractions"]) * config["learning_curves"]["seeds"]


STUDY = Study(
    name="learning_curves",
    summary="the networks' metrics against the number of training jets, up to the papers' sizes",
    methods=METHODS,
    learned=LEARNED,
    samples=samples,
    outputs=outputs,
    jobs=lambda config: {"subset_learning_curves": len(curved(config)) * len(config["learning_curves"]["fractions"]),
                         "train_learning_curves": len(methods(config)) * _points(config),
                         "evaluate_learning_curves": 1},
    runs=lambda config: [*run_names("learning_curves", "train", methods(config)) * _points(config),
                         *run_names("learning_curves", "evaluate", methods(config))],
    reads=("vertexing", "jet_images"),
    check=_check,
)
