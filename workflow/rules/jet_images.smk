# The jet-image study: jet images per shard of its signal (top) and background (QCD) samples
# (from the calorimeter, simulation.smk), the study's train/val/test files and the average images.

from pipeline.datasets import source_files
from pipeline.studies.jet_images import STUDY as JET_IMAGES
from pipeline.studies.jet_images import reference_sample
from pipeline.studies.jet_images.methods import METHODS as IMAGE_MODELS

IMAGE_SAMPLES = JET_IMAGES.samples(config)
# The top-tagging reference data set's sample, if the study reads one instead of the simulation.
JET_IMAGES_REFERENCE = reference_sample(config)

# In the report (category jet_images): {output: (caption in workflow/report/, subcategory)}.
JET_IMAGE_REPORT = {
    "results/jet_images/average_images.png": ("jet_images_average_images", "images"),
    "results/jet_images/single_jets.png": ("jet_images_single_jets", "images"),
    "results/jet_images/taggers.md": ("jet_images_taggers", "top taggers"),
    "results/jet_images/roc.png": ("jet_images_roc", "top taggers"),
    "results/jet_images/autoencoder.md": ("jet_images_autoencoder", "autoencoders"),
    "results/jet_images/autoencoder_roc.png": ("jet_images_autoencoder_roc", "autoencoders"),
    "results/jet_images/reconstruction.png": ("jet_images_reconstruction", "autoencoders"),
    "results/jet_images/denoising.md": ("jet_images_denoising_table", "denoising"),
    "results/jet_images/denoising.png": ("jet_images_denoising", "denoising"),
}


if JET_IMAGES_REFERENCE:

    # The Top Quark Tagging Reference Dataset's files (docs/public_datasets.md): its own splits.
    rule convert_jet_images:
        input:
            **{split: str(path) for split, path in source_files(config["samples"][JET_IMAGES_REFERENCE]).items()},
        output:
            train="results/jet_images/data/train.h5",
            val="results/jet_images/data/val.h5",
            test="results/jet_images/data/test.h5",
        params:
            config=study_config_file("jet_images", IMAGE_SAMPLES, "jet_images"),
        log:
            "logs/jet_images/convert.log",
        benchmark:
            "logs/benchmarks/jet_images/convert.tsv"
        threads: 1
        priority: DATA_PRIORITY
        resources:
            mem_mb=2000,
            runtime=lambda wc, input: 10 + int(input.size_mb) // 20,
        conda:
            "../envs/pipeline.yaml"
        shell:
            "python -m pipeline jet_images convert --config {params.config}"
            " --train {output.train} --val {output.val} --test {output.test} --quiet 2> {log}"

else:

    rule build_jet_images:
        input:
            generated="results/{sample}/generated/shard_{shard}.h5",
            # Images of the generator-level constituents (jet_images.objects: particles) need no cells.
            cells=(["results/{sample}/calorimeter/shard_{shard}.h5"]
                   if config["jet_images"]["objects"] == "calorimeter" else []),
        output:
            "results/{sample}/jet_images/shard_{shard}.h5",
        params:
            config=stage_config_file("calorimeter", "jet_images"),
            cells=lambda wc, input: f" --cells {input.cells}" if input.cells else "",
        log:
            "logs/jet_images/build/{sample}/shard_{shard}.log",
        benchmark:
            "logs/benchmarks/jet_images/build/{sample}/shard_{shard}.tsv"
        threads: 1
        priority: DATA_PRIORITY
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../envs/pipeline.yaml"
        shell:
            "python -m pipeline jet_images build --config {params.config} --generated {input.generated}"
            "{params.cells} --output {output} --quiet 2> {log}"


    rule split_jet_images:
        input:
            [path for sample in IMAGE_SAMPLES for path in sample_shard_files(sample, "jet_images")],
        output:
            train="results/jet_images/data/train.h5",
            val="results/jet_images/data/val.h5",
            test="results/jet_images/data/test.h5",
        params:
            config=study_config_file("jet_images", IMAGE_SAMPLES, "split", "calorimeter",
                                     "jet_images"),
        log:
            "logs/jet_images/split.log",
        benchmark:
            "logs/benchmarks/jet_images/split.tsv"
        threads: 1
        priority: DATA_PRIORITY
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../envs/pipeline.yaml"
        shell:
            "python -m pipeline jet_images split --config {params.config} --inputs {input}"
            " --train {output.train} --val {output.val} --test {output.test} 2> {log}"


rule plot_jet_images:
    input:
        "results/jet_images/data/train.h5",
    output:
        reported(expand("results/jet_images/{name}.{ext}", name=["average_images", "single_jets"], ext=["png", "pdf"]),
                 "jet_images", JET_IMAGE_REPORT),
    log:
        "logs/jet_images/plot.log",
    benchmark:
        "logs/benchmarks/jet_images/plot.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline jet_images plot --input {input} --output-dir results/jet_images 2> {log}"


rule train_jet_images:
    input:
        train="results/jet_images/data/train.h5",
        val="results/jet_images/data/val.h5",
    output:
        checkpoint="results/jet_images/models/{method}.ckpt",
        history="results/jet_images/models/{method}_history.csv",
    wildcard_constraints:
        method="|".join(IMAGE_MODELS),
    params:
        launch=TRAINING_LAUNCH,
        config=study_config_file("jet_images", IMAGE_SAMPLES, "jet_images", "training",
                                 "mlflow"),
    log:
        "logs/jet_images/train_{method}.log",
    benchmark:
        "logs/benchmarks/jet_images/train_{method}.tsv"
    threads: config["jet_images"]["training"].get("threads", config["training"]["threads"])
    resources:
        **training_resources(mem_mb=6000, minutes=180),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.launch}python -m pipeline jet_images train --config {params.config} --method {wildcards.method}"
        " --train {input.train} --val {input.val} --checkpoint {output.checkpoint}"
        " --history {output.history} --quiet 2> {log}"


rule evaluate_jet_images:
    input:
        test="results/jet_images/data/test.h5",
        checkpoints=expand("results/jet_images/models/{method}.ckpt", method=IMAGE_MODELS),
    output:
        reported([path for path in JET_IMAGES.outputs(config) if not path.startswith("results/jet_images/data/")
                  and "average_images" not in path and "single_jets" not in path], "jet_images", JET_IMAGE_REPORT),
    params:
        config=study_config_file("jet_images", IMAGE_SAMPLES, "jet_images", "evaluation", "mlflow"),
        checkpoints=lambda wc, input: " ".join(f"--checkpoint {m}={p}" for m, p in zip(IMAGE_MODELS, input.checkpoints)),
    log:
        "logs/jet_images/evaluate.log",
    benchmark:
        "logs/benchmarks/jet_images/evaluate.tsv"
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline jet_images evaluate --config {params.config} --test {input.test}"
        " {params.checkpoints} --output-dir results/jet_images 2> {log}"
