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
    study_packs,
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
    pack=SAFE_NAME,
    dataset=SAFE_NAME,
    chunk=r"\d+",


def pack_dir(study, pack, chunk):
    """The directory of one training job: a run directory per variant of the pack."""
    return f"results/runs/{study}/{pack}/chunk{chunk}"


def dataset_spec_json(wildcards):
    """The dataset's config entry, as JSON for the command line."""
    return json.dumps(config["datasets"][wildcards.dataset], sort_keys=True)


def train_specs(wildcards):
    """The specs of the pack's variants."""
    variants = study_packs(config, wildcards.study)[wildcards.pack]
    return [variant_spec(config, wildcards.study, v) for v in variants]


def train_spec_json(wildcards):
    """Everything the training job needs, as JSON for the command line (a param: edits rerun it)."""
    return json.dumps(train_specs(wildcards), sort_keys=True)


def train_dataset(wildcards):
    """The dataset file the study trains on."""
    return f"results/datasets/{config['studies'][wildcards.study]['dataset']}.npz"


def train_seeds(wildcards):
    """The seeds of one chunk, comma-separated."""
    return ",".join(
        map(str, chunk_seeds(config, wildcards.study, int(wildcards.chunk)))
    )


def train_mem_mb(wildcards, attempt):
    """Memory (MB) for a training job: framework base plus activations of all replicas (x attempt).

    Measured once with the train rule's benchmark files (benchmarks/train/*.tsv, max_rss; torch 2.13
    CPU, 1 thread, 2 jobs at a time on a 2-core VM): 464-468 MB for each job of config/tiny.yaml,
    471-589 MB for each job of config/config.yaml (10 seeds; 500-unit dropout/noise jobs the largest).
    Python, torch and Lightning are ~460 MB of that; the replicas' weights and activations a few MB.
    A base of 768 MB plus the activation estimate asks 1.4-1.7x the measured peaks. A GPU job also
    maps the CUDA libraries (not measured here: an allowance of 2 GB). Retries ask attempt x as much.
    """
    spec = train_specs(wildcards)[0]
    seeds = len(chunk_seeds(config, wildcards.study, int(wildcards.chunk)))
    widest = max(
        (layer["dense"]["units"] for layer in spec["layers"] if "dense" in layer),
        default=1,
    )
    n = spec["dataset"]["params"]["n_samples"]
    activations_mb = seeds * n * widest * 4 * 16 / 1e6
    base_mb = 768 + (2048 if config["accelerator"] == "gpu" else 0)
    return int((base_mb + activations_mb) * attempt)


def train_runtime(wildcards, attempt):
    """Minutes for a training job: startup + per-step overhead + arithmetic (x attempt).

    Measured once with the train rule's benchmark files (benchmarks/train/*.tsv, wall seconds; 1
    thread, 2 jobs at a time on a 2-core VM): config/tiny.yaml 6-10 s a job (24-40 steps: startup
    dominates); config/config.yaml 9-18 s (mean 14) for batchnorm (1,600 steps, 10 replicas x 50
    units) and 15-32 s (mean 24) for dropout/noise (4,000 steps, 10 replicas x 500 units): ~5 s of
    startup and ~5 ms per optimizer step; the replica-batched matmuls are small. The estimate (10 s +
    5 ms a step + multiply-adds at 5 GFLOP/s: 10, 18 and 32 s) is 1.3-1.4x the mean of each group
    and above all but one job's time. SLURM counts whole minutes: these jobs ask for 1 (then 2, 3).
    """
    specs = train_specs(wildcards)
    spec = specs[0]
    seeds = len(chunk_seeds(config, wildcards.study, int(wildcards.chunk))) * len(specs)
    n_train = spec["dataset"]["n_train"]
    batch = min(spec["training"]["batch_size"], n_train)
    steps = spec["training"]["epochs"] * -(-n_train // spec["training"]["batch_size"])
    widest = max(
        (layer["dense"]["units"] for layer in spec["layers"] if "dense" in layer),
        default=1,
    )
    # multiply-adds of the forward and backward pass through the widest layers
    flops = steps * seeds * batch * widest * 18
    seconds = 10 + steps * 0.005 + flops / 5e9
    return int(-(-seconds // 60)) * attempt


def train_gpus(wildcards):
    """GPUs for a training job: 1 when config's accelerator is gpu, else 0 (no GPU requested).

    'auto' requests none: it uses a GPU only where the job lands on one.
    """
    return 1 if config["accelerator"] == "gpu" else 0


def study_jobs(study):
    return [job for job in JOBS if job["study"] == study]


def study_pack_dirs(wildcards):
    """The training jobs' directories of one study."""
    return [
        pack_dir(j["study"], j["pack"], j["chunk"]) for j in study_jobs(wildcards.study)
    ]


def study_runs_arg(wildcards):
    """Every variant's run directory of one study, quoted for the shell."""
    return " ".join(
        shlex.quote(f"{pack_dir(j['study'], j['pack'], j['chunk'])}/{variant}")
        for j in study_jobs(wildcards.study)
        for variant in j["variants"]
    )


def report_inputs(wildcards):
    """Everything the report reads: aggregates, datasets and every run (for decision boundaries)."""
    inputs = [
        f"results/aggregate/{study}/{name}.csv"
        for study in config["studies"]
        for name in ("summary", "per_seed", "curves", "finals", "runtime")
    ]
    inputs += [f"results/datasets/{name}.npz" for name in used_datasets()]
    inputs += [pack_dir(j["study"], j["pack"], j["chunk"]) for j in JOBS]
    return inputs


def used_datasets():
    return sorted({study["dataset"] for study in config["studies"].values()})


def report_config_json(wildcards):
    """The validated config as JSON, in config order (a function: its text may hold braces)."""
    return json.dumps(config)


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
