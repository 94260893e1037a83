# Learning curves: the vertex finders' and the image taggers' metrics against the number of
# training jets (nested seeded subsets of each study's training split, several seeds per
# point), beside the papers' numbers at their sizes (docs/learning_curves.md).

from pipeline.studies.learning_curves import STUDY as LEARNING_CURVES
from pipeline.studies.learning_curves import curved as curved_studies
from pipeline.studies.learning_curves import methods as curve_methods
from pipeline.studies.learning_curves.methods import STUDY_OF as CURVE_STUDY_OF

CURVED = curved_studies(config)
CURVE_METHODS = curve_methods(config)
CURVE_SAMPLES = LEARNING_CURVES.samples(config)
# The points' names in paths: the fractions as the config writes them (0.1, 0.3, 1).
CURVE_FRACTIONS = [f"{fraction:g}" for fraction in config["learning_curves"]["fractions"]]
CURVE_REPLICAS = list(range(config["learning_curves"]["seeds"]))
# Only the curved studies' sections: a change to another study's must not retrain these points.
CURVE_SECTIONS = ("learning_curves", *CURVED)
# In the report (category learning_curves): {output: (caption in workflow/report/, subcategory[, labels])}.
LEARNING_CURVES_REPORT = {
    "results/learning_curves/curve.md": ("learning_curves_table", "curves"),
    **{f"results/learning_curves/{study}.png": ("learning_curves_figure", "curves", {"study": study})
       for study in CURVED},
}


def curve_point(kind):
    """The path of one point's ``kind`` (checkpoint, history) for a method, fraction and replica."""
    suffix = {"checkpoint": ".ckpt", "history": "_history.csv"}[kind]
    return f"results/learning_curves/models/{{method}}_{{fraction}}_seed{{replica}}{suffix}"


rule subset_learning_curves:
    input:
        "results/{study}/data/train.h5",
    output:
        "results/learning_curves/{study}/data/train_{fraction}.h5",
    wildcard_constraints:
        study="|".join(CURVED) or "none",
        fraction="|".join(CURVE_FRACTIONS),
    params:
        config=study_config_file("learning_curves", CURVE_SAMPLES, *CURVE_SECTIONS),
    log:
        "logs/learning_curves/subset_{study}_{fraction}.log",
    benchmark:
        "logs/benchmarks/learning_curves/subset_{study}_{fraction}.tsv"
    threads: 1
    priority: DATA_PRIORITY
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline learning_curves subset --config {params.config} --study {wildcards.study}"
        " --fraction {wildcards.fraction} --input {input} --output {output} 2> {log}"


rule train_learning_curves:
    input:
        train=lambda wc: f"results/learning_curves/{CURVE_STUDY_OF[wc.method]}/data/train_{wc.fraction}.h5",
        val=lambda wc: f"results/{CURVE_STUDY_OF[wc.method]}/data/val.h5",
    output:
        checkpoint=curve_point("checkpoint"),
        history=curve_point("history"),
    wildcard_constraints:
        method="|".join(CURVE_METHODS) or "none",
        fraction="|".join(CURVE_FRACTIONS),
        replica=r"\d+",
    params:
        launch=TRAINING_LAUNCH,
        config=study_config_file("learning_curves", CURVE_SAMPLES, *CURVE_SECTIONS, "training", "mlflow"),
    log:
        "logs/learning_curves/train_{method}_{fraction}_seed{replica}.log",
    benchmark:
        "logs/benchmarks/learning_curves/train_{method}_{fraction}_seed{replica}.tsv"
    threads: config["training"]["threads"]
    priority: LONG_TRAINING_PRIORITY
    resources:
        **training_resources(mem_mb=8000, minutes=240),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launch}python -m pipeline learning_curves train --config {params.config} --method {wildcards.method}"
        " --fraction {wildcards.fraction} --replica {wildcards.replica} --train {input.train} --val {input.val}"
        " --checkpoint {output.checkpoint} --history {output.history} --quiet 2> {log}"


rule evaluate_learning_curves:
    input:
        checkpoints=expand(curve_point("checkpoint"), method=CURVE_METHODS, fraction=CURVE_FRACTIONS,
                           replica=CURVE_REPLICAS),
        subsets=expand("results/learning_curves/{study}/data/train_{fraction}.h5", study=CURVED,
                       fraction=CURVE_FRACTIONS),
        tests=expand("results/{study}/data/test.h5", study=CURVED),
    output:
        reported(LEARNING_CURVES.outputs(config), "learning_curves", LEARNING_CURVES_REPORT),
    params:
        config=study_config_file("learning_curves", CURVE_SAMPLES, *CURVE_SECTIONS, "evaluation", "mlflow"),
        checkpoints=" ".join(f"--checkpoint {m}:{f}:{r}={curve_point('checkpoint').format(method=m, fraction=f, replica=r)}"
                             for m in CURVE_METHODS for f in CURVE_FRACTIONS for r in CURVE_REPLICAS),
        subsets=" ".join(f"--subset {s}:{f}=results/learning_curves/{s}/data/train_{f}.h5"
                         for s in CURVED for f in CURVE_FRACTIONS),
        tests=" ".join(f"--test {s}=results/{s}/data/test.h5" for s in CURVED),
    log:
        "logs/learning_curves/evaluate.log",
    benchmark:
        "logs/benchmarks/learning_curves/evaluate.tsv"
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline learning_curves evaluate --config {params.config} {params.checkpoints} {params.subsets}"
        " {params.tests} --output-dir results/learning_curves 2> {log}"
