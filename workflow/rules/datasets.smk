# Training datasets built from the simulated shards.


rule split:
    input:
        shard_files("tracks"),
    output:
        train="results/{sample}/split/train.h5",
        val="results/{sample}/split/val.h5",
        test="results/{sample}/split/test.h5",
    params:
        config=stage_config_file("split"),
    log:
        "logs/split/{sample}.log",
    benchmark:
        "logs/benchmarks/split/{sample}.tsv"
    threads: 1
    priority: DATA_PRIORITY
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline split --config {params.config} --sample {wildcards.sample}"
        " --inputs {input} --train {output.train} --val {output.val}"
        " --test {output.test} 2> {log}"
