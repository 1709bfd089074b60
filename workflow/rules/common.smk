"""Config validation and the input/param functions the rules share."""

import datetime
import json
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from reglab.config import (
    ConfigError,
    chunk_seeds,
    spec_hash,
    training_jobs,
    validate_config,
    variant_spec,
)

SAFE_NAME = "[A-Za-z0-9][A-Za-z0-9_.-]*"

try:
    config.update(validate_config(config, source="config"))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

JOBS = training_jobs(config)


wildcard_constraints:
    study=SAFE_NAME,
    variant=SAFE_NAME,
    dataset=SAFE_NAME,
    chunk=r"\d+",


def run_dir(study, variant, chunk):
    """The directory of one training job's results."""
    return f"results/runs/{study}/{variant}/chunk{chunk}"


def dataset_spec_json(wildcards):
    """The dataset's config entry, as JSON for the command line."""
    return json.dumps(config["datasets"][wildcards.dataset], sort_keys=True)


def train_spec(wildcards):
    return variant_spec(config, wildcards.study, wildcards.variant)


def train_spec_json(wildcards):
    """Everything the training job needs, as JSON for the command line (a param: edits rerun it)."""
    return json.dumps(train_spec(wildcards), sort_keys=True)


def train_dataset(wildcards):
    """The dataset file the study trains on."""
    return f"results/datasets/{config['studies'][wildcards.study]['dataset']}.npz"


def train_seeds(wildcards):
    """The seeds of one chunk, comma-separated."""
    return ",".join(
        map(str, chunk_seeds(config, wildcards.study, int(wildcards.chunk)))
    )


def train_outdir(wildcards):
    return run_dir(wildcards.study, wildcards.variant, wildcards.chunk)


def train_mem_mb(wildcards, attempt):
    """Memory for a training job: framework base plus activations of all replicas (x attempt)."""
    spec = train_spec(wildcards)
    seeds = len(chunk_seeds(config, wildcards.study, int(wildcards.chunk)))
    widest = max(
        (layer["dense"]["units"] for layer in spec["layers"] if "dense" in layer),
        default=1,
    )
    n = spec["dataset"]["params"]["n_samples"]
    activations_mb = seeds * n * widest * 4 * 16 / 1e6
    return int((1024 + activations_mb) * attempt)


def train_runtime(wildcards, attempt):
    """Minutes for a training job, from epochs x seeds x model size (x attempt)."""
    spec = train_spec(wildcards)
    seeds = len(chunk_seeds(config, wildcards.study, int(wildcards.chunk)))
    n_train = spec["dataset"]["n_train"]
    steps = spec["training"]["epochs"] * -(-n_train // spec["training"]["batch_size"])
    widest = max(
        (layer["dense"]["units"] for layer in spec["layers"] if "dense" in layer),
        default=1,
    )
    seconds = 30 + steps * seeds * widest * 2e-6 * 10
    return int(max(5, seconds / 60 * 2) * attempt)


def study_run_dirs(wildcards):
    """All run directories of one study (their meta.json marks them complete)."""
    return [
        run_dir(job["study"], job["variant"], job["chunk"])
        for job in JOBS
        if job["study"] == wildcards.study
    ]


def study_run_metas(wildcards):
    return [f"{d}/meta.json" for d in study_run_dirs(wildcards)]


def study_runs_arg(wildcards):
    return " ".join(shlex.quote(d) for d in study_run_dirs(wildcards))


def report_inputs(wildcards):
    """Everything the report reads: aggregates, datasets and every run (for decision boundaries)."""
    inputs = [
        f"results/aggregate/{study}/{name}.csv"
        for study in config["studies"]
        for name in ("summary", "per_seed", "curves", "finals", "runtime")
    ]
    inputs += [f"results/datasets/{name}.npz" for name in used_datasets()]
    inputs += [
        f"{run_dir(j['study'], j['variant'], j['chunk'])}/boundary.npz" for j in JOBS
    ]
    return inputs


def used_datasets():
    return sorted({study["dataset"] for study in config["studies"].values()})


def config_json():
    return json.dumps(config, sort_keys=True)


RUN_INFO = "logs/run_info.json"


onstart:
    Path(RUN_INFO).parent.mkdir(parents=True, exist_ok=True)
    Path(RUN_INFO).write_text(
        json.dumps(
            {
                "command": shlex.join(sys.argv),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"
                ),
            }
        )
    )
