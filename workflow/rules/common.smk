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


def widest_dense(spec):
    """Units of a variant's widest dense layer (1 without one)."""
    return max(
        (layer["dense"]["units"] for layer in spec["layers"] if "dense" in layer),
        default=1,
    )


def train_mem_mb(wildcards, attempt):
    """Memory (MB) for a training job: framework base plus activations of all replicas (x attempt).

    Measured once with the train rule's benchmark files (benchmarks/train/*.tsv, max_rss; torch 2.13
    CPU, 1 thread): 464-470 MB for each job of config/tiny.yaml; for config/config.yaml 474-589 MB
    for the MLP jobs (10 seeds; the 500-unit dropout/noise ones the largest), 431-557 MB for CNN,
    417-528 MB for LSTM jobs, and 689-728 MB for the grid packs of 9-10 variants (a pack holds its
    variants' results: ~26 MB more per variant). Python, torch and Lightning are ~460 MB of it.
    768 MB + the activation estimate + 32 MB per further variant of a pack asks 1.3-1.7x the
    measured peaks. A GPU job also maps the CUDA libraries (not measured here: an allowance of
    2 GB). Retries ask attempt x as much.
    """
    specs = train_specs(wildcards)
    seeds = len(chunk_seeds(config, wildcards.study, int(wildcards.chunk)))
    activations_mb = 0
    for spec in specs:
        widest = widest_dense(spec)
        n = spec["dataset"]["params"]["n_samples"]
        activations_mb = max(activations_mb, seeds * n * widest * 4 * 16 / 1e6)
    base_mb = 768 + 32 * (len(specs) - 1)
    if config["accelerator"] == "gpu":
        base_mb += 2048
    return int((base_mb + activations_mb) * attempt)


def train_runtime(wildcards, attempt):
    """Minutes for a training job: startup + per-step cost of each variant of the pack (x attempt).

    Measured once with the train rule's benchmark files (benchmarks/train/*.tsv, wall seconds; 1
    thread): config/tiny.yaml 6-13 s a job (24-40 steps: startup dominates). config/config.yaml,
    one job at a time: 20 s for a 500-unit MLP (4,000 steps of 10 replicas), 9 s for a CNN
    (300 steps), 18 s for an LSTM (240 steps); two at a time on 2 cores 9-18 s for the 50-unit MLPs
    (1,600 steps) and 15-32 s for the 500-unit ones; a grid pack trains its 9-10 variants one after
    another (120-150 CPU s, 430-480 s wall when the machine was shared 3 ways). That is ~5 s of
    startup and per optimizer step ~3-5 ms (MLP), ~14 ms (CNN), ~52 ms (LSTM). With 50 seeds
    (stress run of the three seed studies, 4 jobs on 2 cores): 19-26 s for the 50-unit MLPs, 67-124 s
    for the 500-unit ones, where per-replica random draws dominate. The estimate below (10 s + per
    step 5, 20 or 60 ms + multiply-adds at 1.5 GFLOP/s, for each variant) is 1.0-1.9x the measured
    times (37 s for a 500-unit MLP of 10 seeds, 66 s of 50 seeds). SLURM counts whole minutes:
    single jobs of 10 seeds ask for 1 minute, packs several (then 2x, 3x on the retries).
    """
    step_seconds = {"dense": 0.005, "conv2d": 0.020, "lstm": 0.060}
    seeds = len(chunk_seeds(config, wildcards.study, int(wildcards.chunk)))
    seconds = 10
    for spec in train_specs(wildcards):  # a pack's variants train one after another
        n_train = spec["dataset"]["n_train"]
        batch_size = spec["training"]["batch_size"]
        batch = min(batch_size, n_train)
        steps = spec["training"]["epochs"] * -(-n_train // batch_size)
        per_step = max(
            [step_seconds.get(kind, 0) for layer in spec["layers"] for kind in layer]
            + [step_seconds["dense"]]
        )
        widest = widest_dense(spec)
        # multiply-adds of the forward and backward pass through the widest dense layers
        flops = steps * seeds * batch * widest * 18
        seconds += steps * per_step + flops / 1.5e9
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
