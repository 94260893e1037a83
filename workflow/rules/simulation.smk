# Event generation and detector simulation, one job per sample and shard.


rule generate:
    output:
        "results/{sample}/generated/shard_{shard}.h5",
    params:
        config=stage_config_file(),
    log:
        "logs/generate/{sample}/shard_{shard}.log",
    benchmark:
        "logs/benchmarks/generate/{sample}/shard_{shard}.tsv"
    threads: 1
    priority: DATA_PRIORITY
    resources:
        mem_mb=2000,
        runtime=lambda wc: 10 + config["samples"][wc.sample]["events_per_shard"] // 2000,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline generate --config {params.config} --sample {wildcards.sample}"
        " --shard {wildcards.shard} --output {output} 2> {log}"


rule simulate_tracker:
    input:
        "results/{sample}/generated/shard_{shard}.h5",
    output:
        "results/{sample}/tracks/shard_{shard}.h5",
    params:
        config=stage_config_file("tracker"),
    log:
        "logs/simulate_tracker/{sample}/shard_{shard}.log",
    benchmark:
        "logs/benchmarks/simulate_tracker/{sample}/shard_{shard}.tsv"
    threads: 1
    priority: DATA_PRIORITY
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline simulate-tracker --config {params.config} --input {input}"
        " --output {output} 2> {log}"


rule simulate_calorimeter:
    input:
        "results/{sample}/generated/shard_{shard}.h5",
    output:
        "results/{sample}/calorimeter/shard_{shard}.h5",
    params:
        config=stage_config_file("calorimeter"),
    log:
        "logs/simulate_calorimeter/{sample}/shard_{shard}.log",
    benchmark:
        "logs/benchmarks/simulate_calorimeter/{sample}/shard_{shard}.tsv"
    threads: 1
    priority: DATA_PRIORITY
    resources:
        mem_mb=2000,
        runtime=lambda wc: 10 + config["samples"][wc.sample]["events_per_shard"] // 500,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline simulate-calorimeter --config {params.config} --input {input}"
        " --output {output} --quiet 2> {log}"
