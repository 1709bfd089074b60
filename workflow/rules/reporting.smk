# What the workflow reports besides its results: the plan's CPU time under Snakemake's job stats,
# and the per-study figures of `snakemake --report`.

from snakemake.logging import logger
from snakemake_interface_logger_plugins.common import LogEvent

#: per-study figures for `snakemake --report` (the HTML page draws them inline): name -> caption
STUDY_FIGURES = {
    "learning_curves": "../report/learning_curves.rst",
    "final_accuracy": "../report/final_accuracy.rst",
}


def study_figure_path(study, name):
    """One per-study figure of `snakemake --report` (a PNG)."""
    return f"{RESULTS}/figures/{study}/{name}.png"


def study_figures_all(wildcards):
    """Every study's figures."""
    return [
        study_figure_path(study, name)
        for study in config["studies"]
        for name in STUDY_FIGURES
    ]


# The plan's CPU time is printed under Snakemake's job stats, in dry runs too (the onstart handler
# does not run in a dry run). The estimates are common.smk's train_minutes (minutes, rounded up per
# job as SLURM counts them; the train rule's runtime resource is a time limit with a margin on top)
# times the job's threads, over the training jobs of this invocation that still need to run
# (finished ones are left out).
def plan_line(jobs):
    """One line: the training jobs among ``jobs`` and their estimated CPU time (minutes x threads)."""
    minutes = [
        (train_minutes(job.wildcards), job.threads)
        for job in jobs
        if job.rule.name == "train"
    ]
    cpu = sum(runtime * threads for runtime, threads in minutes)
    longest = max((runtime for runtime, _ in minutes), default=0)
    return (
        f"reglab plan: {len(minutes)} training jobs, estimated {cpu:g} CPU-minutes"
        f" (at most {longest:g} min for the longest job)"
    )


def add_plan_line(record):
    """Logging filter: append plan_line to Snakemake's job stats (its RUN_INFO messages)."""
    if getattr(record, "event", None) == LogEvent.RUN_INFO and workflow.dag is not None:
        jobs = workflow.dag.needrun_jobs(exclude_finished=False)
        record.msg = f"{record.msg}\n{plan_line(jobs)}"
    return True


add_plan_line.reglab_plan = True
for old in [f for f in logger.filters if getattr(f, "reglab_plan", False)]:
    logger.removeFilter(old)  # the Snakefile parsed again in this process
logger.addFilter(add_plan_line)
