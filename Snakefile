# From Pythia 8 events to validated, versioned HDF5 (see README.md).
# Thin by design: the logic lives in the `pipeline` package, one CLI sub-command per rule.

from pathlib import Path

from pipeline.config import check_pythia_settings_of, validate_config


# A --configfile is a complete configuration on its own (defaults from the schema):
# merged into config.yaml, it could not drop config.yaml's samples.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# Schema validation fills in every default; an unknown key, a wrong type or a
# negative count stops here, before any job starts, with the key and its source named.
_SOURCE = ", ".join(map(str, workflow.overwrite_configfiles)) or "config.yaml"
if workflow.config_settings.config:
    _SOURCE += " (with --config overrides)"
config.update(validate_config(config, source=_SOURCE))
check_pythia_settings_of(config, source=_SOURCE)


include: "workflow/rules/common.smk"
include: "workflow/rules/simulation.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/validation.smk"
include: "workflow/rules/vertexing.smk"
include: "workflow/rules/flavour_tagging.smk"
include: "workflow/rules/jet_images.smk"
include: "workflow/rules/particle_flow.smk"
include: "workflow/rules/super_resolution.smk"


# `snakemake --report results/report.zip` after a run: every figure and table, with its caption
# (workflow/report/), in one category per study.
report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        expand("results/{sample}/split/{split}.h5", sample=TRACKING_SAMPLES, split=SPLITS),
        expand(
            "results/validation/{sample}/{plot}.{ext}",
            sample=VALIDATION_SAMPLES,
            plot=VALIDATION_PLOTS,
            ext=["png", "pdf"],
        ),
        expand("results/validation/{sample}/summary.md", sample=VALIDATION_SAMPLES),
        VERTEXING_OUTPUTS,
        FLAVOUR_TAGGING_OUTPUTS,
        JET_IMAGE_OUTPUTS if IMAGE_STUDY else [],
        PARTICLE_FLOW_OUTPUTS if PARTICLE_FLOW_STUDY else [],
        SUPER_RESOLUTION_OUTPUTS if SUPER_RESOLUTION_STUDY else [],
