"""Training: a pure ``train`` function and the job that writes one run directory."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
import resource
import time
import warnings
from pathlib import Path
from typing import TextIO

import numpy as np
import pytorch_lightning as pl
import torch

from reglab.contract import HISTORY_METRICS
from reglab.fused import fusable
from reglab.module import ReplicaClassifier
from reglab.replicas import batch_spec, plan_models, replica_seed, seed_label, split_random_state, stream_seed

BOUNDARY_GRID = 80  # points per axis of the decision-boundary grid
BOUNDARY_MARGIN = 0.25


@dataclasses.dataclass
class TrainResult:
    """Everything one training job measured, as numpy arrays indexed ``[epoch, replica]``."""

    seeds: list[int]
    history: dict[str, np.ndarray]  # metric -> [epochs, S]
    epoch_time_s: np.ndarray  # [epochs], whole job
    final: dict[str, np.ndarray]  # train/test loss/acc in inference mode -> [S] (NaN if diverged)
    diverged_epoch: np.ndarray  # [S], 1-based epoch the loss stopped being finite, 0 = never
    grid_x: np.ndarray | None  # decision-boundary grid (2-D binary problems only, else None)
    grid_y: np.ndarray | None
    prob: np.ndarray | None  # [S, G, G]
    fit_time_s: float
    peak_rss_mb: float
    threads: int
    accelerator: str
    engine: str  # fused or torch (reglab.fused), the engine of the model(s) that trained these replicas


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS.

    Training allocates and frees the same few ~1 MB activation buffers thousands of times; with
    glibc's defaults each becomes an mmap/munmap pair and fresh page faults (profiled: the first
    run of a job 1.6x slower, twice the system time). A no-op where libc is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 1 << 30)
    mallopt(m_trim_threshold, 1 << 30)


def configure_process(threads: int) -> None:
    """Set up this process for training: ``threads`` torch threads (no oversubscription), allocator."""
    keep_freed_memory()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def boundary_grid(data: dict, points: int = BOUNDARY_GRID) -> tuple[np.ndarray, np.ndarray]:
    """Axis coordinates covering all train and test points with a margin."""
    x = np.concatenate([data["x_train"], data["x_test"]])
    lo, hi = x.min(axis=0) - BOUNDARY_MARGIN, x.max(axis=0) + BOUNDARY_MARGIN
    return (np.linspace(lo[0], hi[0], points, dtype=np.float32), np.linspace(lo[1], hi[1], points, dtype=np.float32))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """A training job's live progress: after each block of epochs (about 5% of a model's schedule)
    one flushed log line (epoch k/E, mean ± std of train and test accuracy over the model's replicas,
    elapsed time and the job's ETA) and the block's per-epoch, per-replica metrics appended to a CSV
    that can be read while the job runs. No carriage returns: log files stay line-oriented."""

    COLUMNS = ("model", "variant", "seed", "epoch", *HISTORY_METRICS)

    def __init__(self, work: int, csv_path: str | Path | None = None, stream: TextIO | None = None) -> None:
        self.work = max(1, int(work))  # replica-epochs the whole job trains
        self.done = 0
        self.stream = stream  # None: no log lines
        self.csv_path = None if csv_path is None else Path(csv_path)
        self.start = time.perf_counter()
        self.model = 0
        self.variants: list[str] = []
        if self.csv_path is not None:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.csv_path, "w", encoding="utf-8") as fh:  # a log: rewritten by each attempt
                fh.write(",".join(self.COLUMNS) + "\n")

    def begin_model(self, variants: list[str]) -> None:
        """The next model starts; ``variants[r]`` names replica r's variant."""
        self.model += 1
        self.variants = list(variants)

    def __call__(self, module, first: int, last: int) -> None:
        """Report the epochs ``first`` to ``last - 1`` that ``module`` (a ReplicaClassifier) just trained."""
        replicas = module.net.replicas
        self.done += (last - first) * replicas
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.work - self.done)
        h = module.history
        train_acc, test_acc = h["train_acc"][last - 1].numpy(), h["test_acc"][last - 1].numpy()
        if self.stream is not None:
            self.stream.write(
                f"model {self.model} ({replicas} replicas) epoch {last}/{module.epochs}: "
                f"train acc {_mean_std(train_acc)}, test acc {_mean_std(test_acc)}; "
                f"{_duration(elapsed)} elapsed, ETA {_duration(eta)}\n")
            self.stream.flush()
        if self.csv_path is not None:
            seeds = module.net.seeds
            values = {m: h[m][first:last].numpy() for m in HISTORY_METRICS}
            rows = []
            for i, epoch in enumerate(range(first + 1, last + 1)):
                for r in range(replicas):
                    metrics = ",".join(repr(float(values[m][i, r])) for m in HISTORY_METRICS)
                    rows.append(f"{self.model},{self.variants[r]},{seeds[r]},{epoch},{metrics}\n")
            with open(self.csv_path, "a", encoding="utf-8") as fh:
                fh.writelines(rows)
                fh.flush()


def _mean_std(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "nan (all diverged)"
    return f"{finite.mean():.3f} ± {finite.std():.3f}" + (f" ({values.size - finite.size} diverged)"
                                                           if finite.size < values.size else "")


def make_trainer(accelerator: str) -> pl.Trainer:
    """A quiet, deterministic Lightning trainer running one fit of the whole schedule."""
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*`srun` command is available.*")  # we may run under SLURM, not DDP
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")  # Lightning's own use of torch's pytree
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        num_sanity_val_steps=0,
    )


def split_data(dataset: dict, data: dict, seed: int) -> dict:
    """The train/test split a replica with split seed ``seed`` trains on (a variance decomposition's
    ``split`` source): the dataset's generator run again with ``random_state``
    :func:`reglab.replicas.split_random_state` (same n_samples and n_train); a dataset without one
    (a user's file, a loader or generator without random_state) has its pooled train and test
    samples (``data``) split again at random, n_train of them to train (stratified when the dataset is)."""
    state = split_random_state(seed)
    params = dataset.get("params") or {}
    if "generator" in dataset and "random_state" in params:
        from reglab.data import make_dataset

        return dict(make_dataset({**dataset, "params": {**params, "random_state": state}}))
    from sklearn.model_selection import train_test_split

    x = np.concatenate([data["x_train"], data["x_test"]])
    y = np.concatenate([data["y_train"], data["y_test"]])
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, train_size=len(data["y_train"]), random_state=state, stratify=y if dataset.get("stratify") else None)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def replica_data(spec: dict, data: dict, seeds: list) -> dict:
    """What a model's replicas train on: ``data`` itself, shared (no copy), unless a replica has a
    split seed of its own (:func:`reglab.replicas.stream_seed`); then every replica's own arrays,
    stacked ``[S, ...]`` and marked ``per_replica`` (the others keep ``data``'s split)."""
    splits = [stream_seed(s, "split") for s in seeds]
    if all(split is None for split in splits):
        return data
    made = {split: split_data(spec["dataset"], data, split) for split in dict.fromkeys(splits) if split is not None}
    parts = [data if split is None else made[split] for split in splits]
    out = {key: np.stack([np.asarray(part[key], dtype=np.float32) for part in parts])
           for key in ("x_train", "y_train", "x_test", "y_test")}
    return {**out, "per_replica": True}


def fit_model(spec: dict, data: dict, seeds: list, accelerator: str = "cpu",
              progress: Progress | None = None, engine: str = "fused") -> TrainResult:
    """Train one model: replica r is ``spec`` (a :func:`reglab.replicas.batch_spec`, whose varying
    hyperparameters hold one value per replica) with seed ``seeds[r]`` (an int, or seeds per source
    of randomness: :func:`reglab.replicas.replica_seed`); ``progress`` hears of each block of epochs.
    ``engine``: ``fused`` trains the models :func:`reglab.fused.fused_layout` allows with the fused
    loop on the CPU, the others with autograd; ``torch`` trains every model with autograd."""
    labels = [seed_label(s) for s in seeds]
    pl.seed_everything(labels[0], workers=True, verbose=False)
    data = replica_data(spec, data, seeds)
    per_replica = data.get("per_replica", False)
    module = ReplicaClassifier(spec, seeds, data, progress=progress, engine=engine)
    trainer = make_trainer(accelerator)
    start = time.perf_counter()
    trainer.fit(module)
    fit_time = time.perf_counter() - start
    module.net.eval()
    final = {}
    for split in ("train", "test"):
        x = torch.as_tensor(data[f"x_{split}"], device=module.device)
        y = torch.as_tensor(data[f"y_{split}"], device=module.device)
        if not per_replica:
            x, y = x.expand(len(seeds), *x.shape), y.expand(len(seeds), -1)
        loss, acc = module.evaluate(x, y)
        final[f"{split}_loss"], final[f"{split}_acc"] = loss.cpu().numpy(), acc.cpu().numpy()
    diverged = module.diverged_epoch.numpy()
    for values in final.values():
        values[diverged > 0] = np.nan
    gx = gy = prob = None
    sample_shape = data["x_train"].shape[2:] if per_replica else data["x_train"].shape[1:]
    if sample_shape == (2,) and module.net.binary:  # a decision boundary exists to draw: 2-D inputs, 2 classes
        gx, gy = boundary_grid({k: data[k].reshape(-1, 2) for k in ("x_train", "x_test")})
        xx, yy = np.meshgrid(gx, gy)
        plane = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], axis=1), device=module.device)
        prob = module.net.predict_proba(plane).cpu().numpy().reshape(len(seeds), len(gy), len(gx))
    return TrainResult(
        seeds=labels,
        history={m: module.history[m].numpy() for m in HISTORY_METRICS},
        epoch_time_s=module.epoch_time.numpy(),
        final=final,
        diverged_epoch=diverged,
        grid_x=gx,
        grid_y=gy,
        prob=None if prob is None else prob.astype(np.float32),
        fit_time_s=fit_time,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        threads=torch.get_num_threads(),
        accelerator=str(module.device.type),
        engine=module.engine,
    )


def _share(result: TrainResult, rows: list[int]) -> TrainResult:
    """The replicas ``rows`` of a model's result, with the model's times shared out by replica count."""
    part = len(rows) / len(result.seeds)
    return dataclasses.replace(
        result,
        seeds=[result.seeds[r] for r in rows],
        history={m: v[:, rows] for m, v in result.history.items()},
        epoch_time_s=result.epoch_time_s * part,
        final={m: v[rows] for m, v in result.final.items()},
        diverged_epoch=result.diverged_epoch[rows],
        prob=None if result.prob is None else result.prob[rows],
        fit_time_s=result.fit_time_s * part,
    )


def _join(parts: list[TrainResult]) -> TrainResult:
    """One variant's result from its shares of several models (replicas in order, times added)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return dataclasses.replace(
        first,
        seeds=[s for p in parts for s in p.seeds],
        history={m: np.concatenate([p.history[m] for p in parts], axis=1) for m in first.history},
        epoch_time_s=sum(p.epoch_time_s for p in parts),
        final={m: np.concatenate([p.final[m] for p in parts]) for m in first.final},
        diverged_epoch=np.concatenate([p.diverged_epoch for p in parts]),
        prob=None if first.prob is None else np.concatenate([p.prob for p in parts]),
        fit_time_s=sum(p.fit_time_s for p in parts),
        peak_rss_mb=max(p.peak_rss_mb for p in parts),
        engine=",".join(dict.fromkeys(e for p in parts for e in p.engine.split(","))),
    )


def train_points(specs: list[dict], data: dict, seeds: list[int], threads: int = 1, accelerator: str = "cpu",
                 max_replicas: int | None = None, progress_csv: str | Path | None = None,
                 log: TextIO | None = None, engine: str = "fused") -> list[TrainResult]:
    """Train every variant of ``specs`` (a pack: a grid's points, say) on ``data`` once per seed.

    Variants that differ only in per-replica hyperparameters train together as the replicas of one
    model (:func:`reglab.replicas.plan_models`; at most ``max_replicas`` per model); replica (p, s)
    trains exactly as variant p alone with seed s would. Returns one result per spec, its replicas
    in seed order; each model's wall times are shared out among its variants by replica count.
    Progress goes to ``log`` (a text stream; None: no lines) and, per epoch and replica, to ``progress_csv``.
    ``engine``: see :func:`fit_model`; with ``fused`` on the CPU, the variants the fused engine trains
    and those it cannot form separate models (:func:`reglab.fused.fusable`).
    """
    configure_process(threads)
    shares: list[list[TrainResult]] = [[] for _ in specs]
    # the fused engine's variants apart from those only autograd trains (on the CPU)
    apart = fusable(np.asarray(data["x_train"]).shape[1:]) if engine == "fused" and accelerator == "cpu" else None
    models = plan_models(specs, seeds, max_replicas, apart)
    work = sum(len(m.replicas) * int(specs[m.points[0]]["training"]["epochs"]) for m in models)
    progress = Progress(work, progress_csv, log)
    for model in models:
        points = [p for p, _ in model.replicas]
        progress.begin_model([str(specs[p].get("variant", p)) for p in points])
        seeds = [replica_seed(specs[p], s) for p, s in model.replicas]  # an int, or seeds per source (vary)
        result = fit_model(batch_spec([specs[p] for p in points]), data, seeds, accelerator, progress, engine)
        for p in model.points:
            shares[p].append(_share(result, [r for r, q in enumerate(points) if q == p]))
    return [_join(parts) for parts in shares]


def train(spec: dict, data: dict, seeds: list[int], threads: int = 1, accelerator: str = "cpu",
          engine: str = "fused") -> TrainResult:
    """Train the variant ``spec`` on ``data`` once per seed (all seeds as replicas of one model)."""
    return train_points([spec], data, seeds, threads, accelerator, engine=engine)[0]
