"""Config validation and the input/param functions the rules share."""

import datetime
import functools
import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError

from reglab import contract
from reglab.config import (
    ConfigError,
    chunk_seeds,
    seed_schedule,
    spec_hash,
    study_packs,
    study_runs,
    training_jobs,
    validate_config,
    variant_spec,
)
from reglab.fused import fusable, fused_epoch_seconds, fused_layout
from reglab.layerkinds import network_cost
from reglab.provenance import DATA_MODULES, TRAINING_MODULES, code_hash
from reglab.replicas import batch_spec, plan_models
from reglab.shapes import dataset_input, dataset_sizes

SAFE_NAME = "[A-Za-z0-9][A-Za-z0-9_.-]*"

try:
    config.update(validate_config(config, source="config"))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# A named run (config's run_name, e.g. `snakemake --config run_name=laptop`) writes its results,
# report, logs and benchmarks under runs/<run_name>/, so runs of other configs, versions or machines
# sit side by side (`python -m reglab compare` compares two); unnamed, they go where they always did.
RUN_PREFIX = f"runs/{config['run_name']}/" if config.get("run_name") else ""


def run_path(path):
    """``path`` (results/..., report/..., logs/..., benchmarks/...) in this run's folder."""
    return f"{RUN_PREFIX}{path}"


RESULTS = run_path("results")
REPORT = run_path("report/index.html")
# The config's hash, recorded in results/config.json and shown in the report: a run's name is not
# part of it, so two named runs of one config have the same hash.
CONFIG_HASH = spec_hash({k: v for k, v in config.items() if k != "run_name"})
JOBS = training_jobs(config)
RUNS = study_runs(config, RESULTS)
PACKS = {
    study: study_packs(config, study) for study in config["studies"]
}  # planned once
# The hash of the code and versions each kind of job runs (reglab.provenance.code_hash): a param of
# the rule, so that Snakemake's params trigger (on by default) reruns the jobs whose code changed.
TRAIN_CODE = code_hash(TRAINING_MODULES)
KERNEL_CODE = code_hash(("fused", "fusedkernels"))
DATA_CODE = code_hash(DATA_MODULES)


wildcard_constraints:
    study=SAFE_NAME,
    pack=SAFE_NAME,
    dataset=SAFE_NAME,
    chunk=r"\d+",
    look=r"\d+",


def pack_dir(study, pack, chunk):
    """The directory of one training job: a run directory per variant of the pack."""
    return contract.job_dir(RESULTS, study, pack, chunk)


def dataset_spec_json(wildcards):
    """The dataset's config entry, as JSON for the command line."""
    return json.dumps(config["datasets"][wildcards.dataset], sort_keys=True)


def dataset_file(wildcards):
    """The user's data file a dataset reads (an input: editing it remakes the dataset); none for a generator."""
    return config["datasets"][wildcards.dataset].get("file", [])


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


def fused_engine():
    """Whether the training jobs use the fused engine where a model allows (reglab.train.train_points
    with engine fused, on the CPU)."""
    return config["engine"] == "fused" and config["accelerator"] == "cpu"


def model_layout(specs, model):
    """The fused engine's layout of a training job's model (reglab.fused.fused_layout), or a string
    (the reason) when autograd trains it: config's engine is torch, the accelerator not the CPU, or
    the network not of the fused engine's family."""
    if not fused_engine():
        return "autograd"
    shape, _ = dataset_input(specs[model.points[0]]["dataset"])
    return fused_layout(batch_spec([specs[p] for p in model.points]), shape)


def train_kernels(wildcards):
    """The fused engine's compiled loops a training job's models use, one per family
    (reglab.fused.Layout.kind: dense or lstm), each compiled once by the fused_kernels rule, not by
    every training job at the same time, and the two families' side by side. Ancient: compiling a
    loop again (its code changed) reruns no training job by itself; the train rule's code_hash
    covers that code."""
    specs = train_specs(wildcards)
    layouts = [model_layout(specs, m) for m in train_models(wildcards)]
    families = sorted(
        {layout.kind for layout in layouts if not isinstance(layout, str)}
    )
    return [ancient(f"{RESULTS}/kernels/{family}.json") for family in families]


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
        sum(dataset_sizes(spec["dataset"]))
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
    specs = train_specs(wildcards)
    apart = None  # as reglab.train.train_points plans them
    if fused_engine():
        apart = fusable(dataset_input(specs[0]["dataset"])[0])
    return plan_models(specs, seeds, train_max_replicas(wildcards), apart)


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


#: per optimizer step and replica, above its multiply-adds: the replica's own random draws and
#: small per-replica operations (reglab.layerkinds' docstring has the measurements)
REPLICA_STEP_SECONDS = 0.00001


def train_seconds(wildcards):
    """Estimated seconds of a training job on one core (_train_seconds), computed once per job: the
    job's priority, its time limit and the plan line all ask."""
    return _train_seconds(wildcards.study, wildcards.pack, wildcards.chunk)


@functools.cache
def _train_seconds(study, pack, chunk):
    """Estimated seconds of a training job on one core: startup + per-step cost of each model it trains.

    10 s of startup, then for each model (one after another) per optimizer step its network's
    overhead (the registry's `step_seconds`: 2 ms, 4 ms with an LSTM) + REPLICA_STEP_SECONDS per
    replica + its forward and backward multiply-adds (3x the registry's forward `macs`, 2 flops each)
    for every replica and sample of the batch, and per epoch the test pass (1x), at the network's
    `flop_rate`. The measured times behind these numbers are in reglab.layerkinds' docstring. A
    model the fused engine trains (config's engine fused, reglab.fused.fused_layout) costs its
    replica-epochs at reglab.fused.fused_epoch_seconds instead.
    """
    wildcards = SimpleNamespace(study=study, pack=pack, chunk=chunk)
    specs = train_specs(wildcards)
    seconds = 10
    for model in train_models(wildcards):
        spec = specs[model.points[0]]
        n_train, n_test = dataset_sizes(spec["dataset"])
        replicas = len(model.replicas)
        layout = model_layout(specs, model)
        if not isinstance(layout, str):
            shape = dataset_input(spec["dataset"])[0]
            seconds += (
                spec["training"]["epochs"]
                * replicas
                * fused_epoch_seconds(spec, layout, n_train, n_test, shape)
            )
            continue
        batch_size = spec["training"]["batch_size"]
        batch = min(batch_size, n_train)
        steps = spec["training"]["epochs"] * -(-n_train // batch_size)
        cost = variant_cost(spec)
        # samples through the network: training's forward and backward (3x), each epoch's test pass
        passes = steps * batch * 3 + spec["training"]["epochs"] * n_test
        flops = replicas * cost.macs * 2 * passes
        seconds += (
            steps * (cost.step_seconds + replicas * REPLICA_STEP_SECONDS)
            + flops / cost.flop_rate
        )
    return seconds


def train_minutes(wildcards):
    """Estimated whole minutes of a training job (train_seconds rounded up, as SLURM counts them)."""
    return int(-(-train_seconds(wildcards) // 60))


def train_runtime(wildcards, attempt):
    """Time limit of a training job in minutes: twice its estimate (train_minutes) and one minute
    more, x attempt. The margin covers a slower or busier node and a slow start-up (imports from a
    shared file system); a job estimated at 20 s asks for 3 minutes."""
    return (2 * train_minutes(wildcards) + 1) * attempt


#: the priority of the quick steps training waits for (the validated config, pack specs, datasets):
#: above every training job's (train_priority), so that no training job waits for a core behind others
PREPARE_PRIORITY = 1_000_000


def train_priority(wildcards):
    """Longest jobs first: a job's estimated seconds (train_seconds), so that with more jobs than
    cores the longest do not start last and finish after everything else."""
    return int(train_seconds(wildcards))


def train_gpus(wildcards):
    """GPUs for a training job: 1 when config's accelerator is gpu, else 0 (no GPU requested).

    'auto' requests none: it uses a GPU only where the job lands on one.
    """
    return 1 if config["accelerator"] == "gpu" else 0


def study_jobs(study):
    """The training jobs whose runs a study aggregates: its own and those it shares (RUNS)."""
    dirs = {str(Path(run["dir"]).parent) for run in RUNS if run["study"] == study}
    return [j for j in JOBS if pack_dir(j["study"], j["pack"], j["chunk"]) in dirs]


def look_job_dirs(study, look, variants):
    """The training jobs of one look (chunk) of a sequential study that train any of ``variants``."""
    return sorted(
        {
            str(Path(run["dir"]).parent)
            for run in RUNS
            if run["study"] == study
            and run["variant"] in variants
            and Path(run["dir"]).parent.name == f"chunk{look}"
        }
    )


def sequential_trail(study, looks=None):
    """The training job dirs of each look a sequential study runs, up to ``looks`` looks: look 0
    trains every variant, each later look the variants its previous look's checkpoint left active.
    """
    schedule = seed_schedule(config, study)
    active = set(config["studies"][study]["variants"])
    trail = []
    last = schedule.n_looks if looks is None else min(looks, schedule.n_looks)
    for k in range(last):
        trail.append(look_job_dirs(study, k, active))
        if k + 1 == last:
            break
        decision = contract.read_json(
            Path(checkpoints.sequential_look.get(study=study, look=k).output[0])
            / "decision.json"
        )
        if decision["stop"]:
            break
        active = set(decision["active"])
    return trail


def sequential_look_dirs(study, trail=None):
    """The checkpoint folders of every look a sequential study runs (none for a fixed study);
    ``trail``: its :func:`sequential_trail`, when already known."""
    if seed_schedule(config, study) is None:
        return []
    if trail is None:
        trail = sequential_trail(study)
    return [contract.sequential_look_dir(RESULTS, study, k) for k in range(len(trail))]


def study_look_dirs(wildcards):
    """The look folders one study's runs file waits for (none for a fixed study)."""
    return sequential_look_dirs(wildcards.study)


def look_inputs(wildcards):
    """What a look's checkpoint reads: the training jobs of that look and every earlier one."""
    trail = sequential_trail(wildcards.study, int(wildcards.look) + 1)
    return [d for dirs in trail for d in dirs]


def pack_dirs_of(study):
    """The directories of the training jobs whose runs a study aggregates (a sequential study:
    those of the looks it runs, and its look folders)."""
    if seed_schedule(config, study) is not None:
        trail = sequential_trail(study)
        return [d for dirs in trail for d in dirs] + sequential_look_dirs(study, trail)
    return [pack_dir(j["study"], j["pack"], j["chunk"]) for j in study_jobs(study)]


def study_pack_dirs(wildcards):
    """The inputs of one study's aggregate: :func:`pack_dirs_of` the study."""
    return pack_dirs_of(wildcards.study)


def write_study_runs(study, runs, path, log):
    """Write the runs file of one study: the runs it aggregates whose training job ran."""
    runs = ran_runs(study, runs)
    contract.write_json(runs, path)
    contract.write_text(f"{len(runs)} run directories\n", log)


def write_sequential_look(wildcards, input, output, params, log):
    """Decide one look of a sequential study (reglab.looks) from the runs its training jobs wrote."""
    from reglab import looks

    ran = set(input[:-1])
    runs = [r for r in params.runs if str(Path(r["dir"]).parent) in ran]
    decision = looks.run_look(
        config, wildcards.study, int(wildcards.look), runs, output[0]
    )
    decided = {claim: trace["decision"] for claim, trace in decision["claims"].items()}
    contract.write_text(
        f"look {wildcards.look}: {decision['n']} seeds per variant; {decided}; "
        f"next: {decision['active'] or 'stop'}\n",
        log[0],
    )


def ran_runs(study, runs):
    """Of a study's ``runs``, those whose training job ran (a sequential study's later looks run
    only for the variants of undecided claims)."""
    if seed_schedule(config, study) is None:
        return runs
    ran = {d for dirs in sequential_trail(study) for d in dirs}
    return [run for run in runs if str(Path(run["dir"]).parent) in ran]


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
    for study in config["studies"]:
        inputs += pack_dirs_of(study)
    inputs += [contract.study_runs_path(RESULTS, study) for study in config["studies"]]
    return inputs


def used_datasets():
    return sorted({study["dataset"] for study in config["studies"].values()})


RUN_INFO = run_path("logs/run_info.json")


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
