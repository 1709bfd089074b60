"""Writing one variant's run directory (the files :mod:`reglab.contract` describes), atomically."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from reglab import provenance
from reglab.config import spec_hash
from reglab.contract import (BOUNDARY, FINAL, HISTORY, HISTORY_METRICS, META, SCHEMA_VERSION, atomic_write, write_csv,
                             write_text)
from reglab.train import TrainResult


def history_frame(spec: dict, result: TrainResult) -> pd.DataFrame:
    """Tidy per-seed, per-epoch history."""
    epochs, s = result.history["train_loss"].shape
    frame = pd.DataFrame(
        {
            "study": spec["study"],
            "variant": spec["variant"],
            "seed": np.tile(np.asarray(result.seeds, dtype=np.int64), epochs),
            "epoch": np.repeat(np.arange(1, epochs + 1), s),
        }
    )
    for m in HISTORY_METRICS:
        frame[m] = result.history[m].reshape(-1)
    frame["epoch_time_s"] = np.repeat(result.epoch_time_s, s)
    return frame


def final_frame(spec: dict, result: TrainResult) -> pd.DataFrame:
    """Tidy per-seed final metrics (inference mode)."""
    frame = pd.DataFrame({"study": spec["study"], "variant": spec["variant"], "seed": result.seeds})
    for m in HISTORY_METRICS:
        frame[m] = result.final[m]
    frame["diverged_epoch"] = result.diverged_epoch
    return frame


def run_meta(spec: dict, result: TrainResult, chunk: int, started: str) -> dict:
    """Provenance and job-level measurements of one run."""
    return {
        "schema_version": SCHEMA_VERSION,
        "study": spec["study"],
        "variant": spec["variant"],
        "chunk": chunk,
        "seeds": result.seeds,
        "config_hash": spec_hash(spec),
        "code_hash": provenance.code_hash(),
        "spec": spec,
        "fit_time_s": result.fit_time_s,
        "peak_rss_mb": result.peak_rss_mb,
        "threads": result.threads,
        "accelerator": result.accelerator,
        "engine": result.engine,
        "versions": provenance.versions(),
        "git": provenance.git_state(),
        **provenance.machine(),
        "started": started,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_run(outdir: Path, spec: dict, result: TrainResult, chunk: int, started: str) -> None:
    """Write the files of a run directory, each atomically; ``meta.json`` last.

    ``boundary.npz`` is written only for problems with a decision boundary to draw.
    """
    outdir = Path(outdir)
    write_csv(history_frame(spec, result), outdir / HISTORY)
    write_csv(final_frame(spec, result), outdir / FINAL)
    if result.prob is not None:
        seeds = np.asarray(result.seeds, dtype=np.int64)
        atomic_write(
            outdir / BOUNDARY,
            lambda fh: np.savez_compressed(fh, seeds=seeds, grid_x=result.grid_x, grid_y=result.grid_y, prob=result.prob),
        )
    meta = run_meta(spec, result, chunk, started)
    write_text(json.dumps(meta, indent=2), outdir / META)
