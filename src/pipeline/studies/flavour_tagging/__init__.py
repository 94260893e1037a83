"""Vertex-informed jet flavour tagging (the downstream study of Shlomi et al., EPJC 81
(2021) 540, the lecture's table): one b / c / light graph classifier per vertex finder."""

from __future__ import annotations

from pipeline.studies.descriptor import Study, run_names
from pipeline.studies.flavour_tagging.methods import LEARNED, METHODS
from pipeline.studies.vertexing import samples as vertexing_samples
from pipeline.studies.vertexing.methods import LEARNED as LEARNED_VERTEX_FINDERS
from pipeline.studies.vertexing.methods import METHODS as VERTEX_FINDERS

#: The vertex finders whose edges are scores the edge step logs a run for (the learned
#: ones' runs are their trainings).
_CLASSICAL_FINDERS = tuple(finder for finder in VERTEX_FINDERS if finder not in LEARNED_VERTEX_FINDERS)


def outputs(config) -> list[str]:
    figures = ["roc", *(f"confusion_{method}" for method in METHODS)]
    return [*(f"results/flavour_tagging/{name}" for name in ("metrics.csv", "metrics_replicas.csv", "table.md")),
            *(f"results/flavour_tagging/{name}.{ext}" for name in figures for ext in ("png", "pdf"))]


STUDY = Study(
    name="flavour_tagging",
    summary="b / c / light jet tagging on each vertex finder's edges",
    methods=METHODS,
    learned=LEARNED,
    # The vertexing study's sample: it reads that study's track sets and vertex finders.
    samples=vertexing_samples,
    outputs=outputs,
    jobs=lambda config: {"score_edges_flavour_tagging": len(VERTEX_FINDERS),
                         "train_flavour_tagging": len(LEARNED) * config["flavour_tagging"]["seeds"],
                         "evaluate_flavour_tagging": 1},
    runs=lambda config: [*run_names("flavour_tagging", "train", LEARNED) * config["flavour_tagging"]["seeds"],
                         *run_names("flavour_tagging", "evaluate", METHODS),
                         *run_names("flavour_tagging", "score-edges", _CLASSICAL_FINDERS)],
    requires=("vertexing",),
    reads=("vertexing",),
)
