# From Pythia 8 events to validated, versioned HDF5 (see README.md).
# Thin by design: the logic lives in the `pipeline` package, one CLI sub-command per rule.

from pathlib import Path

from pipeline.datasets import check_sources
from pipeline.simulation.checks import check_generators
from pipeline.run_config import resolve_config


# A --configfile is a complete configuration on its own (defaults from the schema):
# merged into config.yaml, it could not drop config.yaml's samples.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# Schema validation fills in every default; an unknown key, a wrong type, a negative count
# or settings of a study that do not fit together stop here, before any job starts, with
# the key and its source named.
_SOURCE = ", ".join(map(str, workflow.overwrite_configfiles)) or "config.yaml"
if workflow.config_settings.config:
    _SOURCE += " (with --config overrides)"
config.update(resolve_config(config, source=_SOURCE))
check_generators(config, source=_SOURCE)
# The public data sets' files (file samples): every file there, in its authors' layout.
check_sources(config, source=_SOURCE)


include: "workflow/rules/common.smk"
include: "workflow/rules/simulation.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/validation.smk"

# One rule file per study the config runs (workflow/rules/<study>.smk), in the registry's order.
for _study in ACTIVE_STUDIES:

    include: f"workflow/rules/{_study.name}.smk"



# `snakemake --report results/report.zip` after a run: every figure and table, with its caption
# (workflow/report/), in one category per study, after a front page of the run and its studies.
report: report_page()


rule all:
    default_target: True
    input:
        final_outputs(),
