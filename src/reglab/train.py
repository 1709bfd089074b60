"""Training: a pure ``train`` function and the job that writes one run directory."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
import resource
import time
import warnings

import numpy as np
import pytorch_lightning as pl
import torch

from reglab.contract import HISTORY_METRICS
from reglab.module import ReplicaClassifier
from reglab.replicas import batch_spec, plan_models

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


def make_trainer(accelerator: str) -> pl.Trainer:
    """A quiet, deterministic Lightning trainer running one fit of the whole schedule."""
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
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


def fit_model(spec: dict, data: dict, seeds: list[int], accelerator: str = "cpu") -> TrainResult:
    """Train one model: replica r is ``spec`` (a :func:`reglab.replicas.batch_spec`, whose varying
    hyperparameters hold one value per replica) with seed ``seeds[r]``."""
    pl.seed_everything(int(seeds[0]), workers=True, verbose=False)
    module = ReplicaClassifier(spec, seeds, data)
    trainer = make_trainer(accelerator)
    start = time.perf_counter()
    trainer.fit(module)
    fit_time = time.perf_counter() - start
    module.net.eval()
    final = {}
    for split in ("train", "test"):
        x = torch.as_tensor(data[f"x_{split}"], device=module.device)
        y = torch.as_tensor(data[f"y_{split}"], device=module.device)
        loss, acc = module.evaluate(x.expand(len(seeds), *x.shape), y.expand(len(seeds), -1))
        final[f"{split}_loss"], final[f"{split}_acc"] = loss.cpu().numpy(), acc.cpu().numpy()
    diverged = module.diverged_epoch.numpy()
    for values in final.values():
        values[diverged > 0] = np.nan
    gx = gy = prob = None
    if data["x_train"].ndim == 2 and data["x_train"].shape[1] == 2 and module.net.binary:
        gx, gy = boundary_grid(data)  # a decision boundary exists to draw: 2-D inputs, 2 classes
        xx, yy = np.meshgrid(gx, gy)
        plane = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], axis=1), device=module.device)
        prob = module.net.predict_proba(plane).cpu().numpy().reshape(len(seeds), len(gy), len(gx))
    return TrainResult(
        seeds=[int(s) for s in seeds],
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
    )


def train_points(specs: list[dict], data: dict, seeds: list[int], threads: int = 1, accelerator: str = "cpu",
                 max_replicas: int | None = None) -> list[TrainResult]:
    """Train every variant of ``specs`` (a pack: a grid's points, say) on ``data`` once per seed.

    Variants that differ only in per-replica hyperparameters train together as the replicas of one
    model (:func:`reglab.replicas.plan_models`; at most ``max_replicas`` per model); replica (p, s)
    trains exactly as variant p alone with seed s would. Returns one result per spec, its replicas
    in seed order; each model's wall times are shared out among its variants by replica count.
    """
    configure_process(threads)
    shares: list[list[TrainResult]] = [[] for _ in specs]
    for model in plan_models(specs, seeds, max_replicas):
        points = [p for p, _ in model.replicas]
        result = fit_model(batch_spec([specs[p] for p in points]), data, [s for _, s in model.replicas], accelerator)
        for p in model.points:
            shares[p].append(_share(result, [r for r, q in enumerate(points) if q == p]))
    return [_join(parts) for parts in shares]


def train(spec: dict, data: dict, seeds: list[int], threads: int = 1, accelerator: str = "cpu") -> TrainResult:
    """Train the variant ``spec`` on ``data`` once per seed (all seeds as replicas of one model)."""
    return train_points([spec], data, seeds, threads, accelerator)[0]
