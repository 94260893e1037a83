# Calorimeter super-resolution (the second half of Di Bello et al., EPJC 81 (2021) 107): the
# particle-flow study's images of its pi+ pi0 sample and of single pi0s, built with this
# study's detector cells; interpolations and networks from the detector's cells to the fine
# ones, scored by image metrics and by the photon pairs and diphoton masses they recover.

from pipeline.studies.super_resolution import STUDY as SUPER_RESOLUTION
from pipeline.studies.super_resolution import downstream as super_resolution_downstream
from pipeline.studies.super_resolution.detector import IMAGE_SECTIONS as SR_IMAGE_SECTIONS
from pipeline.studies.super_resolution.methods import LEARNED as SR_LEARNED

# [sample, pi0 sample].
SR_SAMPLES = SUPER_RESOLUTION.samples(config)
# Downstream (the particle-flow CNN fed the super-resolved images) where that study runs too.
SR_DOWNSTREAM = super_resolution_downstream(config)
# In the report (category super_resolution): {output: (caption in workflow/report/, subcategory)}.
SUPER_RESOLUTION_REPORT = {
    "results/super_resolution/metrics.md": ("super_resolution_metrics", "image metrics"),
    "results/super_resolution/psnr.png": ("super_resolution_psnr", "image metrics"),
    "results/super_resolution/physics.md": ("super_resolution_physics", "physics"),
    "results/super_resolution/mass.png": ("super_resolution_mass", "physics"),
    "results/super_resolution/shower_shapes.md": ("super_resolution_shower_shapes", "physics"),
    "results/super_resolution/downstream.md": ("super_resolution_downstream", "downstream"),
    "results/super_resolution/downstream_resolution.png": ("super_resolution_downstream", "downstream"),
    **{f"results/super_resolution/event_display_{i}.png": ("super_resolution_event_display", "event displays")
       for i in range(2)},
}
# The split files of both samples, [sample's, pi0 sample's], per split.
SR_SPLIT_FILES = {split: [f"results/super_resolution/data/{sample}/{split}.h5" for sample in SR_SAMPLES]
                  for split in SPLITS}


rule build_super_resolution:
    input:
        "results/{sample}/generated/shard_{shard}.h5",
    output:
        "results/{sample}/super_resolution/shard_{shard}.h5",
    params:
        config=stage_config_file(*SR_IMAGE_SECTIONS),
    log:
        "logs/super_resolution/build/{sample}/shard_{shard}.log",
    benchmark:
        "logs/benchmarks/super_resolution/build/{sample}/shard_{shard}.tsv"
    threads: 1
    priority: DATA_PRIORITY
    resources:
        mem_mb=2000,
        runtime=lambda wc: 10 + config["samples"][wc.sample]["events_per_shard"] // 500,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline super_resolution build --config {params.config} --generated {input}"
        " --output {output} --quiet 2> {log}"


rule split_super_resolution:
    input:
        lambda wc: sample_shard_files(wc.sample, "super_resolution"),
    output:
        train="results/super_resolution/data/{sample}/train.h5",
        val="results/super_resolution/data/{sample}/val.h5",
        test="results/super_resolution/data/{sample}/test.h5",
    wildcard_constraints:
        sample="|".join(SR_SAMPLES),
    params:
        config=stage_config_file("split", *SR_IMAGE_SECTIONS),
    log:
        "logs/super_resolution/split_{sample}.log",
    benchmark:
        "logs/benchmarks/super_resolution/split_{sample}.tsv"
    threads: 1
    priority: DATA_PRIORITY
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline super_resolution split --config {params.config} --sample {wildcards.sample}"
        " --inputs {input} --train {output.train} --val {output.val} --test {output.test} 2> {log}"


rule train_super_resolution:
    input:
        train=SR_SPLIT_FILES["train"],
        val=SR_SPLIT_FILES["val"],
    output:
        checkpoint="results/super_resolution/models/{method}.ckpt",
        history="results/super_resolution/models/{method}_history.csv",
    wildcard_constraints:
        method="|".join(SR_LEARNED),
    params:
        launch=TRAINING_LAUNCH,
        config=study_config_file("super_resolution", SR_SAMPLES, *SR_IMAGE_SECTIONS[1:], "training", "mlflow"),
    log:
        "logs/super_resolution/train_{method}.log",
    benchmark:
        "logs/benchmarks/super_resolution/train_{method}.tsv"
    threads: config["super_resolution"]["training"].get("threads", config["training"]["threads"])
    priority: LONG_TRAINING_PRIORITY
    resources:
        **training_resources(mem_mb=6000, minutes=240),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launch}python -m pipeline super_resolution train --config {params.config} --method {wildcards.method}"
        " --train {input.train} --val {input.val} --checkpoint {output.checkpoint}"
        " --history {output.history} --quiet 2> {log}"


rule evaluate_super_resolution:
    input:
        test=SR_SPLIT_FILES["test"],
        checkpoints=expand("results/super_resolution/models/{method}.ckpt", method=SR_LEARNED),
        particle_flow=["results/particle_flow/models/cnn.ckpt", "results/particle_flow/metrics.csv"]
        if SR_DOWNSTREAM else [],
    output:
        reported(SUPER_RESOLUTION.outputs(config), "super_resolution", SUPER_RESOLUTION_REPORT),
    params:
        config=study_config_file("super_resolution", SR_SAMPLES, *SR_IMAGE_SECTIONS[1:], "evaluation", "mlflow"),
        checkpoints=lambda wc, input: " ".join(f"--checkpoint {m}={p}" for m, p in zip(SR_LEARNED, input.checkpoints)),
        downstream=lambda wc, input: (f"--particle-flow-checkpoint {input.particle_flow[0]} "
                                      f"--particle-flow-metrics {input.particle_flow[1]}") if SR_DOWNSTREAM else "",
    log:
        "logs/super_resolution/evaluate.log",
    benchmark:
        "logs/benchmarks/super_resolution/evaluate.tsv"
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline super_resolution evaluate --config {params.config} --test {input.test[0]}"
        " --pi0-test {input.test[1]} {params.checkpoints} {params.downstream} --output-dir results/super_resolution"
        " 2> {log}"
