# Vertex-informed jet flavour tagging (the lecture's table): one graph classifier per
# vertex finder, fed the frozen finder's edge scores, plus a control without them.

import itertools

from pipeline.studies.flavour_tagging import STUDY as FLAVOUR_TAGGING
from pipeline.studies.flavour_tagging.methods import METHODS as FLAVOUR_TAGGING_METHODS

FLAVOUR_TAGGING_REPLICAS = range(config["flavour_tagging"]["seeds"])
# In the report (category flavour_tagging): {output: (caption in workflow/report/, subcategory[, labels])}.
FLAVOUR_TAGGING_REPORT = {
    "results/flavour_tagging/table.md": ("flavour_tagging_table", "taggers"),
    "results/flavour_tagging/roc.png": ("flavour_tagging_roc", "taggers"),
    **{f"results/flavour_tagging/confusion_{m}.png": ("flavour_tagging_confusion", "confusion matrices", {"method": m})
       for m in FLAVOUR_TAGGING_METHODS},
}


rule score_edges_flavour_tagging:
    input:
        train="results/vertexing/data/train.h5",
        val="results/vertexing/data/val.h5",
        test="results/vertexing/data/test.h5",
        checkpoint=lambda wc: (
            [f"results/vertexing/models/{wc.finder}.ckpt"] if wc.finder in LEARNED_VERTEX_FINDERS else []
        ),
    output:
        train="results/flavour_tagging/edges/{finder}/train.h5",
        val="results/flavour_tagging/edges/{finder}/val.h5",
        test="results/flavour_tagging/edges/{finder}/test.h5",
    wildcard_constraints:
        finder="|".join(VERTEX_FINDERS),
    params:
        config=stage_config_file("vertexing", "evaluation", "mlflow", sample=VERTEXING_SAMPLE),
        checkpoint=lambda wc, input: f"--checkpoint {input.checkpoint}" if input.checkpoint else "",
    log:
        "logs/flavour_tagging/score_edges_{finder}.log",
    benchmark:
        "logs/benchmarks/flavour_tagging/score_edges_{finder}.tsv"
    threads: config["evaluation"]["threads"]
    priority: TAGGING_CHAIN_PRIORITY
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline flavour_tagging score-edges --config {params.config} --method {wildcards.finder} {params.checkpoint}"
        " --train {input.train} --val {input.val} --test {input.test}"
        " --out-train {output.train} --out-val {output.val} --out-test {output.test} 2> {log}"


rule train_flavour_tagging:
    input:
        train="results/vertexing/data/train.h5",
        val="results/vertexing/data/val.h5",
        edges=lambda wc: (
            []
            if wc.method == "no_vertex"
            else [f"results/flavour_tagging/edges/{wc.method}/{split}.h5" for split in ("train", "val")]
        ),
    output:
        checkpoint="results/flavour_tagging/models/{method}_seed{replica}.ckpt",
        history="results/flavour_tagging/models/{method}_seed{replica}_history.csv",
    wildcard_constraints:
        method="|".join(FLAVOUR_TAGGING_METHODS),
        replica=r"\d+",
    params:
        launch=TRAINING_LAUNCH,
        config=stage_config_file("vertexing", "flavour_tagging", "training", "mlflow", sample=VERTEXING_SAMPLE),
        edges=lambda wc, input: (
            f"--edges-train {input.edges[0]} --edges-val {input.edges[1]}" if input.edges else ""
        ),
    log:
        "logs/flavour_tagging/train_{method}_seed{replica}.log",
    benchmark:
        "logs/benchmarks/flavour_tagging/train_{method}_seed{replica}.tsv"
    threads: config["flavour_tagging"]["training"].get("threads", config["training"]["threads"])
    priority: TAGGING_CHAIN_PRIORITY
    resources:
        **training_resources(mem_mb=6000, minutes=120),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launch}python -m pipeline flavour_tagging train --config {params.config} --method {wildcards.method}"
        " --replica {wildcards.replica}"
        " --train {input.train} --val {input.val} {params.edges}"
        " --checkpoint {output.checkpoint} --history {output.history} --quiet 2> {log}"


rule evaluate_flavour_tagging:
    input:
        test="results/vertexing/data/test.h5",
        checkpoints=expand("results/flavour_tagging/models/{method}_seed{replica}.ckpt",
                           method=FLAVOUR_TAGGING_METHODS, replica=FLAVOUR_TAGGING_REPLICAS),
        edges=expand("results/flavour_tagging/edges/{finder}/test.h5", finder=VERTEX_FINDERS),
    output:
        reported(FLAVOUR_TAGGING.outputs(config), "flavour_tagging", FLAVOUR_TAGGING_REPORT),
    params:
        config=stage_config_file("vertexing", "flavour_tagging", "evaluation", "mlflow", sample=VERTEXING_SAMPLE),
        checkpoints=lambda wc, input: " ".join(
            f"--checkpoint {m}={p}" for (m, _), p in
            zip(itertools.product(FLAVOUR_TAGGING_METHODS, FLAVOUR_TAGGING_REPLICAS), input.checkpoints)
        ),
        edges=lambda wc, input: " ".join(f"--edges {f}={p}" for f, p in zip(VERTEX_FINDERS, input.edges)),
    log:
        "logs/flavour_tagging/evaluate.log",
    benchmark:
        "logs/benchmarks/flavour_tagging/evaluate.tsv"
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline flavour_tagging evaluate --config {params.config} --test {input.test}"
        " {params.checkpoints} {params.edges} --output-dir results/flavour_tagging 2> {log}"
