# Validation plots: does the simulation look like physics?

# In the report (category validation, one subcategory per sample): every PNG, and the summary.
VALIDATION_REPORT = {
    **{f"results/validation/{{sample}}/{plot}.png": (f"validation_{plot}", "{sample}") for plot in VALIDATION_PLOTS},
    "results/validation/{sample}/summary.md": ("validation_summary", "{sample}"),
}


rule plot_validation:
    input:
        shard_files("tracks"),
    output:
        reported(
            [
                *expand("results/validation/{{sample}}/{plot}.{ext}", plot=VALIDATION_PLOTS, ext=["png", "pdf"]),
                "results/validation/{sample}/summary.md",
            ],
            "validation",
            VALIDATION_REPORT,
        ),
    params:
        title=lambda wc: f"{wc.sample}, {config['samples'][wc.sample]['sqrt_s'] / 1000:g} TeV",
    log:
        "logs/plot_validation/{sample}.log",
    benchmark:
        "logs/benchmarks/plot_validation/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline plot-validation --inputs {input}"
        " --output-dir results/validation/{wildcards.sample} --title {params.title:q} 2> {log}"
