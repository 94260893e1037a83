# The computer-vision particle flow (Di Bello et al., EPJC 81 (2021) 107): calorimeter images
# of the study's particle-gun samples (pi+ pi0, and single pi+ for the baseline's templates),
# ATLAS's parametrised subtraction, the CNN and graph networks, and their evaluation.

from pipeline.studies.particle_flow import STUDY as PARTICLE_FLOW
from pipeline.studies.particle_flow.methods import LEARNED as PF_LEARNED

# [events sample, calibration sample].
PF_SAMPLES = PARTICLE_FLOW.samples(config)
PF_EVENTS, PF_CALIBRATION = PF_SAMPLES
# In the report (category particle_flow): {output: (caption in workflow/report/, subcategory)}.
PARTICLE_FLOW_REPORT = {
    "results/particle_flow/metrics.md": ("particle_flow_table", "neutral energy"),
    "results/particle_flow/metrics.csv": ("particle_flow_metrics", "neutral energy"),
    "results/particle_flow/cell_mse.csv": ("particle_flow_cell_mse", "neutral energy"),
    "results/particle_flow/response.png": ("particle_flow_response", "neutral energy"),
    "results/particle_flow/resolution.png": ("particle_flow_resolution", "neutral energy"),
    **{f"results/particle_flow/event_display_{i}.png": ("particle_flow_event_display", "event displays")
       for i in range(3)},
}


rule build_particle_flow:
    input:
        "results/{sample}/generated/shard_{shard}.h5",
    output:
        "results/{sample}/particle_flow/shard_{shard}.h5",
    params:
        config=stage_config_file("tracker", "calorimeter", "particle_flow"),
    log:
        "logs/particle_flow/build/{sample}/shard_{shard}.log",
    benchmark:
        "logs/benchmarks/particle_flow/build/{sample}/shard_{shard}.tsv"
    threads: 1
    priority: DATA_PRIORITY
    resources:
        mem_mb=2000,
        runtime=lambda wc: 10 + config["samples"][wc.sample]["events_per_shard"] // 500,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline particle_flow build --config {params.config} --generated {input}"
        " --output {output} --quiet 2> {log}"


rule split_particle_flow:
    input:
        sample_shard_files(PF_EVENTS, "particle_flow"),
    output:
        train="results/particle_flow/data/train.h5",
        val="results/particle_flow/data/val.h5",
        test="results/particle_flow/data/test.h5",
    params:
        config=stage_config_file("split", "tracker", "calorimeter", "particle_flow", sample=PF_EVENTS),
        sample=PF_EVENTS,
    log:
        "logs/particle_flow/split.log",
    benchmark:
        "logs/benchmarks/particle_flow/split.tsv"
    threads: 1
    priority: DATA_PRIORITY
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline particle_flow split --config {params.config} --sample {params.sample}"
        " --inputs {input} --train {output.train} --val {output.val} --test {output.test} 2> {log}"


rule calibrate_particle_flow:
    input:
        sample_shard_files(PF_CALIBRATION, "particle_flow"),
    output:
        "results/particle_flow/templates.json",
    params:
        config=study_config_file("particle_flow", PF_SAMPLES, "tracker", "calorimeter", "particle_flow", "mlflow"),
    log:
        "logs/particle_flow/calibrate.log",
    benchmark:
        "logs/benchmarks/particle_flow/calibrate.tsv"
    threads: 1
    priority: DATA_PRIORITY
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline particle_flow calibrate --config {params.config} --inputs {input}"
        " --output {output} --quiet 2> {log}"


rule train_particle_flow:
    input:
        train="results/particle_flow/data/train.h5",
        val="results/particle_flow/data/val.h5",
    output:
        checkpoint="results/particle_flow/models/{method}.ckpt",
        history="results/particle_flow/models/{method}_history.csv",
    wildcard_constraints:
        method="|".join(PF_LEARNED),
    params:
        launch=TRAINING_LAUNCH,
        config=study_config_file("particle_flow", PF_SAMPLES, "calorimeter", "particle_flow", "training", "mlflow"),
    log:
        "logs/particle_flow/train_{method}.log",
    benchmark:
        "logs/benchmarks/particle_flow/train_{method}.tsv"
    threads: config["particle_flow"]["training"].get("threads", config["training"]["threads"])
    priority: LONG_TRAINING_PRIORITY
    resources:
        **training_resources(mem_mb=6000, minutes=240),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launch}python -m pipeline particle_flow train --config {params.config} --method {wildcards.method}"
        " --train {input.train} --val {input.val} --checkpoint {output.checkpoint}"
        " --history {output.history} --quiet 2> {log}"


rule evaluate_particle_flow:
    input:
        test="results/particle_flow/data/test.h5",
        templates="results/particle_flow/templates.json",
        checkpoints=expand("results/particle_flow/models/{method}.ckpt", method=PF_LEARNED),
    output:
        reported(PARTICLE_FLOW.outputs(config), "particle_flow", PARTICLE_FLOW_REPORT),
    params:
        config=study_config_file("particle_flow", PF_SAMPLES, "calorimeter", "particle_flow", "evaluation", "mlflow"),
        checkpoints=lambda wc, input: " ".join(f"--checkpoint {m}={p}" for m, p in zip(PF_LEARNED, input.checkpoints)),
    log:
        "logs/particle_flow/evaluate.log",
    benchmark:
        "logs/benchmarks/particle_flow/evaluate.tsv"
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline particle_flow evaluate --config {params.config} --test {input.test}"
        " --templates {input.templates} {params.checkpoints} --output-dir results/particle_flow 2> {log}"
