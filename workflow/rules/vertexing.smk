# Secondary-vertex finding in jets: track sets, learned and classical vertex finders,
# evaluation with the metrics of Shlomi et al. (EPJC 81 (2021) 540).

from pipeline.datasets import dataset, source_files
from pipeline.studies.vertexing import STUDY as VERTEXING
from pipeline.studies.vertexing.methods import LEARNED as LEARNED_VERTEX_FINDERS
from pipeline.studies.vertexing.methods import METHODS as VERTEX_FINDERS

VERTEXING_SAMPLE = config["vertexing"]["sample"]
# In the report (category vertexing): {output: (caption in workflow/report/, subcategory)}.
VERTEXING_REPORT = {
    "results/vertexing/metrics.csv": ("vertexing_metrics", "vertex finders"),
    "results/vertexing/table.md": ("vertexing_table", "vertex finders"),
    "results/vertexing/f1_vs_tracks.png": ("vertexing_f1_vs_tracks", "vertex finders"),
}


# The track sets: the sample's splits, or the Set2Graph data set's own files (docs/public_datasets.md).
if dataset(config["samples"][VERTEXING_SAMPLE]):
    VERTEXING_INPUTS = {split: str(path) for split, path in source_files(config["samples"][VERTEXING_SAMPLE]).items()}
else:
    VERTEXING_INPUTS = {split: f"results/{VERTEXING_SAMPLE}/split/{split}.h5" for split in SPLITS}


rule build_graphs_vertexing:
    input:
        **VERTEXING_INPUTS,
    output:
        train="results/vertexing/data/train.h5",
        val="results/vertexing/data/val.h5",
        test="results/vertexing/data/test.h5",
    params:
        config=stage_config_file("vertexing", "tracker", sample=VERTEXING_SAMPLE),
        sample=VERTEXING_SAMPLE,
    log:
        "logs/vertexing/build_track_graphs.log",
    benchmark:
        "logs/benchmarks/vertexing/build_track_graphs.tsv"
    threads: 1
    priority: DATA_PRIORITY
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline vertexing build-graphs --config {params.config} --sample {params.sample}"
        " --train {input.train} --val {input.val} --test {input.test}"
        " --out-train {output.train} --out-val {output.val} --out-test {output.test} 2> {log}"


rule train_vertexing:
    input:
        train="results/vertexing/data/train.h5",
        val="results/vertexing/data/val.h5",
    output:
        checkpoint="results/vertexing/models/{method}.ckpt",
        history="results/vertexing/models/{method}_history.csv",
    wildcard_constraints:
        method="|".join(LEARNED_VERTEX_FINDERS),
    params:
        launch=TRAINING_LAUNCH,
        config=stage_config_file("vertexing", "training", "mlflow", sample=VERTEXING_SAMPLE),
    log:
        "logs/vertexing/train_{method}.log",
    benchmark:
        "logs/benchmarks/vertexing/train_{method}.tsv"
    threads: config["training"]["threads"]
    priority: LONG_TRAINING_PRIORITY
    resources:
        **training_resources(mem_mb=8000, minutes=120),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launch}python -m pipeline vertexing train --config {params.config} --method {wildcards.method}"
        " --train {input.train} --val {input.val} --checkpoint {output.checkpoint}"
        " --history {output.history} --quiet 2> {log}"


rule evaluate_vertexing:
    input:
        test="results/vertexing/data/test.h5",
        checkpoints=expand("results/vertexing/models/{method}.ckpt", method=LEARNED_VERTEX_FINDERS),
    output:
        reported(VERTEXING.outputs(config), "vertexing", VERTEXING_REPORT),
    params:
        config=stage_config_file("vertexing", "evaluation", "mlflow", sample=VERTEXING_SAMPLE),
        checkpoints=lambda wc, input: " ".join(
            f"--checkpoint {m}={p}" for m, p in zip(LEARNED_VERTEX_FINDERS, input.checkpoints)
        ),
    log:
        "logs/vertexing/evaluate.log",
    benchmark:
        "logs/benchmarks/vertexing/evaluate.tsv"
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline vertexing evaluate --config {params.config} --test {input.test}"
        " {params.checkpoints} --output-dir results/vertexing 2> {log}"
