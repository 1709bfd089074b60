"""Config validation and the input/param functions the rules share."""

import datetime
import json
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from reglab import contract
from reglab.config import (
    ConfigError,
    chunk_seeds,
    spec_hash,
    study_packs,
    study_runs,
    training_jobs,
    validate_config,
    variant_spec,
)
from reglab.layerkinds import network_cost
from reglab.replicas import plan_models
from reglab.shapes import dataset_input

SAFE_NAME = "[A-Za-z0-9][A-Za-z0-9_.-]*"

try:
    config.update(validate_config(config, source="config"))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

RESULTS = "results"
JOBS = training_jobs(config)
RUNS = study_runs(config, RESULTS)
PACKS = {
    study: study_packs(config, study) for study in config["studies"]
}  # planned once


wildcard_constraints:
    study=SAFE_NAME,
    pack=SAFE_NAME,
    dataset=SAFE_NAME,
    chunk=r"\d+",


def pack_dir(study, pack, chunk):
    """The directory of one training job: a run directory per variant of the pack."""
    return contract.job_dir(RESULTS, study, pack, chunk)


def dataset_spec_json(wildcards):
    """The dataset's config entry, as JSON for the command line."""
    return json.dumps(config["datasets"][wildcards.dataset], sort_keys=True)


def train_specs(wildcards):
    """The specs of the pack's variants."""
    variants = PACKS[wildcards.study][wildcards.pack]
    return [variant_spec(config, wildcards.study, v) for v in variants]


def pack_spec_hash(wildcards):
    """The hash of everything a pack's training jobs read from the config."""
    return spec_hash(train_specs(wildcards))


def pack_specs_file(wildcards):
    """The file of the pack's variant specs."""
    return contract.pack_specs_path(RESULTS, wildcards.study, wildcards.pack)


def train_dataset(wildcards):
    """The dataset file the study trains on."""
    return contract.dataset_path(RESULTS, config["studies"][wildcards.study]["dataset"])


def train_seeds(wildcards):
    """The seeds of one chunk, comma-separated."""
    return ",".join(
        map(str, chunk_seeds(config, wildcards.study, int(wildcards.chunk)))
    )


def variant_cost(spec):
    """A variant's per-sample costs (reglab.layerkinds.network_cost: largest activation, forward
    multiply-adds, per-step overhead), from the layer registry's cost entries."""
    shape, _ = dataset_input(spec["dataset"])
    return network_cost(spec["layers"], shape)


def replica_mb(spec):
    """Activation memory (MB) of one replica of a variant: every sample of the dataset (evaluation
    runs the whole test set at once) times the network's largest per-sample activation (the layer
    registry's `activation_floats`: a layer's output; an LSTM's hidden state at every time step), as
    float32, 16 times (the copies alive in the forward and backward passes, with headroom).
    """
    return (
        spec["dataset"]["params"]["n_samples"]
        * variant_cost(spec).activation_floats
        * 4
        * 16
        / 1e6
    )


def train_max_replicas(wildcards):
    """At most this many (variant, seed) replicas in one model of the job: config's
    replica_memory_mb over the largest replica's activation memory (a larger pack trains in turns).
    """
    largest = max(replica_mb(spec) for spec in train_specs(wildcards))
    return max(1, int(config["replica_memory_mb"] // max(largest, 1e-9)))


def train_models(wildcards):
    """The models the job trains (reglab.replicas.plan_models): a pack's points of one signature
    share a model, at most train_max_replicas replicas each."""
    seeds = chunk_seeds(config, wildcards.study, int(wildcards.chunk))
    return plan_models(train_specs(wildcards), seeds, train_max_replicas(wildcards))


def train_mem_mb(wildcards, attempt):
    """Memory (MB) for a training job: framework base plus the activations of its largest model (x attempt).

    768 MB (Python, torch and Lightning are ~460 MB of a job) + 32 MB per further variant of a pack
    (it holds its variants' results) + the replicas of its largest model times the largest replica's
    activation memory (replica_mb), which the replica cap keeps within config's replica_memory_mb. A
    GPU job also maps the CUDA libraries (not measured here: an allowance of 2 GB). Retries ask
    attempt x as much. The measured peaks behind these numbers are in reglab.layerkinds' docstring:
    this asks 1.3-2x of them (e.g. 464-470 MB measured, 768-800 MB asked for config/tiny.yaml's
    jobs; 431-557 MB measured, 1,095 MB asked for the CNN of config/config.yaml; 417-528 MB and
    931 MB for its LSTM).
    """
    specs = train_specs(wildcards)
    replicas = max(len(model.replicas) for model in train_models(wildcards))
    base_mb = 768 + 32 * (len(specs) - 1)
    if config["accelerator"] == "gpu":
        base_mb += 2048
    return int((base_mb + replicas * max(map(replica_mb, specs))) * attempt)


#: per optimizer step and replica: drawing each replica's random numbers from its own generator
#: (measured with 50 seeds of the 500-unit dropout model: ~0.3 ms more per step for each replica)
REPLICA_STEP_SECONDS = 0.0003


def train_runtime(wildcards, attempt):
    """Minutes for a training job: startup + per-step cost of each model it trains (x attempt).

    10 s of startup, then for each model (one after another) per optimizer step its network's
    overhead (the registry's `step_seconds`: 5 ms with dense layers only, 20 ms with a conv2d, 60 ms
    with an LSTM) + REPLICA_STEP_SECONDS per replica + its forward and backward multiply-adds (3x
    the registry's forward `macs`, 2 flops each) for every replica and sample of the batch at
    1.5 GFLOP/s. The measured times behind these numbers are in reglab.layerkinds' docstring
    (37 s for a 500-unit MLP of 10 seeds, 66 s of 50 seeds). SLURM counts whole minutes.
    """
    specs = train_specs(wildcards)
    seconds = 10
    for model in train_models(wildcards):
        spec = specs[model.points[0]]
        n_train = spec["dataset"]["n_train"]
        batch_size = spec["training"]["batch_size"]
        batch = min(batch_size, n_train)
        steps = spec["training"]["epochs"] * -(-n_train // batch_size)
        cost = variant_cost(spec)
        replicas = len(model.replicas)
        flops = steps * replicas * batch * cost.macs * 3 * 2
        seconds += (
            steps * (cost.step_seconds + replicas * REPLICA_STEP_SECONDS)
            + flops / 1.5e9
        )
    return int(-(-seconds // 60)) * attempt


def train_gpus(wildcards):
    """GPUs for a training job: 1 when config's accelerator is gpu, else 0 (no GPU requested).

    'auto' requests none: it uses a GPU only where the job lands on one.
    """
    return 1 if config["accelerator"] == "gpu" else 0


def study_jobs(study):
    """The training jobs whose runs a study aggregates: its own and those it shares (RUNS)."""
    dirs = {str(Path(run["dir"]).parent) for run in RUNS if run["study"] == study}
    return [j for j in JOBS if pack_dir(j["study"], j["pack"], j["chunk"]) in dirs]


def study_pack_dirs(wildcards):
    """The directories of the training jobs whose runs one study aggregates."""
    return [
        pack_dir(j["study"], j["pack"], j["chunk"]) for j in study_jobs(wildcards.study)
    ]


def study_run_dirs(wildcards):
    """Every run one study aggregates, as {"dir", "study", "variant"}: a variant whose
    content another listing trains reads that job's run, labelled with its own names."""
    return [run for run in RUNS if run["study"] == wildcards.study]


def results_root(wildcards, input):
    """The results folder: the one holding the validated config the report reads."""
    return str(Path(input.config).parent)


def study_runs_file(wildcards):
    """The file listing one study's run directories."""
    return contract.study_runs_path(RESULTS, wildcards.study)


def aggregate_outdir(wildcards):
    """The folder of one study's aggregate tables."""
    return contract.aggregate_dir(RESULTS, wildcards.study)


def report_inputs(wildcards):
    """Everything the report reads: aggregates, datasets and every run (for decision boundaries)."""
    inputs = [
        contract.aggregate_path(RESULTS, study, name)
        for study in config["studies"]
        for name in contract.AGGREGATES
    ]
    inputs += [contract.dataset_path(RESULTS, name) for name in used_datasets()]
    inputs += [pack_dir(j["study"], j["pack"], j["chunk"]) for j in JOBS]
    inputs += [contract.study_runs_path(RESULTS, study) for study in config["studies"]]
    return inputs


def used_datasets():
    return sorted({study["dataset"] for study in config["studies"].values()})


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
