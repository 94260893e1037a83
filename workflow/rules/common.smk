# Shared names and input functions of the workflow.

# Jobs run `python -m pipeline` with the workflow's src/ first on PYTHONPATH, so the same
# rules work in the project's .venv, in the conda environment of workflow/envs/, and on
# cluster nodes that share this directory.
shell.prefix(f'export PYTHONPATH="{Path(workflow.basedir) / "src"}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"; ')

from pipeline.config import snapshot_config, stage_config
from pipeline.io.outputs import check_output_directory, write_text
from pipeline.studies import active_studies, tracking_samples

# Before anything is written (the config snapshots under results/config/ at parse time).
check_output_directory("results")

SAMPLES = list(config["samples"])
SPLITS = ["train", "val", "test"]
# The studies this config runs (pipeline.studies.descriptor.Study: those whose samples it
# defines); the Snakefile includes their rule files, in the registry's order.
ACTIVE_STUDIES = active_studies(config)
# The samples the tracker simulates: all but the particle guns and the samples of studies
# that read another detector (the jet images' calorimeter pair).
TRACKING_SAMPLES = tracking_samples(config)
VALIDATION_SAMPLES = config["validation"]["samples"] or TRACKING_SAMPLES
# The resources of a training job. One training runs training.devices x num_nodes
# processes (data-parallel when more than one, docs/training_at_scale.md), each on
# training.threads threads and, unless the config trains on CPUs (or Apple's mps), one GPU:
# `gpu` is the job's GPUs (`--executor slurm` turns it into --gpus; a Slurm profile's
# partition file sends the jobs that ask for GPUs to a GPU partition). With launcher srun
# and several processes the job is one Slurm job of that many tasks on num_nodes nodes,
# whose shell starts them with srun (TRAINING_LAUNCH, the rules' params.launch; the plugin's `mpi` resource keeps
# the job step from being wrapped in a one-task srun); otherwise Lightning starts them.
_TRAINING = config["training"]
TRAINING_PROCESSES = _TRAINING["devices"] * _TRAINING["num_nodes"]
_TRAINING_GPUS = 0 if _TRAINING["accelerator"] in ("cpu", "mps") else TRAINING_PROCESSES
_SRUN = _TRAINING["launcher"] == "srun" and TRAINING_PROCESSES > 1
# The job step's geometry is spelled out: the plugin clears the SLURM_* variables of the
# allocation before the rule's shell runs. --kill-on-bad-exit: a rank that fails ends the
# others instead of leaving them waiting for it.
# Per node (Lightning's Slurm environment reads the ranks of a node from --ntasks-per-node).
TRAINING_LAUNCH = (f"srun --nodes={_TRAINING['num_nodes']} --ntasks-per-node={_TRAINING['devices']} "
                   + (f"--gpus-per-node={_TRAINING['devices']} " if _TRAINING_GPUS else "")
                   + "--kill-on-bad-exit=1 ") if _SRUN else ""


def training_runtime(minutes):
    """A training rule's `runtime` [min]: `minutes` on the first attempt, twice that on the
    second, and so on, so that a training a cluster stopped at its time limit (and that
    resumes from its last epoch) gets more time when `retries` submits it again."""
    return lambda wildcards, attempt: attempt * minutes


def training_resources(mem_mb, minutes):
    """A training rule's resources: `mem_mb` per process (times the processes on a node),
    `training_runtime(minutes)`, its GPUs and, for srun, its tasks and nodes."""
    resources = {"mem_mb": mem_mb * _TRAINING["devices"], "runtime": training_runtime(minutes),
                 "gpu": _TRAINING_GPUS}
    if _SRUN:
        resources.update(mpi="srun", tasks=TRAINING_PROCESSES, nodes=_TRAINING["num_nodes"])
        if _TRAINING_GPUS:  # one task per GPU (the plugin would otherwise take `tasks` per GPU)
            resources["tasks_per_gpu"] = 1
    return resources

# Job order among those ready (Snakemake runs the highest priority first and does not pass
# a job's priority on to the jobs it waits for), so that the run ends on short jobs and not
# on a lone long training with a core idle: every training's data first (simulation,
# images, splits, track graphs: ~20 CPU min of short jobs), then the long trainings
# (particle flow, super resolution, vertex finders: 4-9 min on one thread each), then the
# tagging chain (edge scores -> the 18 flavour taggers, 2-3 min each), then the rest
# (jet-image models, plots, evaluations). Measured on the default run: with the taggers
# ahead of the particle-flow data, the last pflow shard waited behind all 18 taggers and
# the particle-flow trainings ended the run.
DATA_PRIORITY = 30
LONG_TRAINING_PRIORITY = 20
TAGGING_CHAIN_PRIORITY = 10
VALIDATION_PLOTS = ["track_multiplicity", "d0_significance", "hadron_decay_length", "jet_pt"]


wildcard_constraints:
    sample="[A-Za-z][A-Za-z0-9_]*",
    shard=r"\d+",


def final_outputs():
    """The inputs of the default target, all (the workflow catalog's get_final_output): the
    splits and validation plots of the tracked samples, and every active study's outputs."""
    return [
        *expand("results/{sample}/split/{split}.h5", sample=TRACKING_SAMPLES, split=SPLITS),
        *expand("results/validation/{sample}/{plot}.{ext}", sample=VALIDATION_SAMPLES, plot=VALIDATION_PLOTS,
                ext=["png", "pdf"]),
        *expand("results/validation/{sample}/summary.md", sample=VALIDATION_SAMPLES),
        *(path for study in ACTIVE_STUDIES for path in study.outputs(config)),
    ]


def report_page():
    """The report's front page: workflow/report/workflow.rst with each active study's line,
    workflow/report/<study>.rst, in place of its ``.. studies`` line, in the registry's order.
    Joined here because Snakemake renders the page with a Jinja2 that cannot include files;
    written under .snakemake/ (not results/), and only when it changes."""
    captions = Path(workflow.basedir) / "workflow" / "report"
    page = (captions / "workflow.rst").read_text().replace(
        ".. studies\n", "".join((captions / f"{study.name}.rst").read_text() for study in ACTIVE_STUDIES))
    path = Path(".snakemake", "pipeline", "report.rst").resolve()
    if not path.exists() or path.read_text() != page:
        write_text(path, page)
    return str(path)


def shard_files(stage):
    """Input function: every shard file of a sample for one stage (generated, tracks)."""

    def files(wildcards):
        n = config["samples"][wildcards.sample]["shards"]
        return [f"results/{wildcards.sample}/{stage}/shard_{i}.h5" for i in range(n)]

    return files


def sample_shard_files(sample, stage):
    """Every shard file of the named sample for one stage, for rules without a {sample} wildcard."""
    return [f"results/{sample}/{stage}/shard_{i}.h5" for i in range(config["samples"][sample]["shards"])]


def study_config_file(name, samples, *sections):
    """Param function: like stage_config_file, for a step that reads several samples."""

    def path(wildcards):
        subset = {"seed": config["seed"], "samples": {s: config["samples"][s] for s in samples}}
        subset.update({section: config[section] for section in sections})
        return str(snapshot_config(subset, "results/config", name=name, write=not workflow.dryrun))

    return path


def stage_config_file(*sections, sample=None):
    """Param function: the resolved config a stage of a sample depends on, as a file.

    Its name carries the content hash, so a job reruns exactly when its part of the
    config changes (the tracker settings do not rerun Pythia). ``sample`` fixes the
    sample for rules without a {sample} wildcard.
    """

    def path(wildcards):
        name = sample or wildcards.sample
        subset = stage_config(config, name, *sections)
        # A dry run only names the file: it must not rewrite what running jobs read.
        return str(snapshot_config(subset, "results/config", name=name, write=not workflow.dryrun))

    return path


def reported(paths, category, entries):
    """Output files ``paths``, those named in ``entries`` ({path: (caption, subcategory)} or
    (caption, subcategory, labels)) marked for `snakemake --report` in ``category``, with the
    caption workflow/report/<caption>.rst. The rest (PDF twins, data files) stay plain."""

    def mark(path):
        caption, subcategory, *labels = entries[path]
        return report(path, caption=f"../report/{caption}.rst", category=category, subcategory=subcategory,
                      labels=labels[0] if labels else None)

    return [mark(path) if path in entries else path for path in paths]
