"""One training job's result directory: written atomically, read back with checks."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from reglab import provenance
from reglab.config import spec_hash
from reglab.module import HISTORY_METRICS
from reglab.train import TrainResult

SCHEMA_VERSION = 1


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it into place.

    On any failure (disk full, read-only folder, an error in ``write``) the temporary file is
    removed and an existing ``path`` is left as it was; an OSError is raised again naming ``path``
    (not the temporary file), with its errno and reason.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:  # e.g. the folder became read-only: report the first problem
            pass
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error (errno, reason) about ``path``: OSError picks the subclass from the errno."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


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
        "spec": spec,
        "fit_time_s": result.fit_time_s,
        "peak_rss_mb": result.peak_rss_mb,
        "threads": result.threads,
        "accelerator": result.accelerator,
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
    atomic_write(outdir / "history.csv", lambda fh: history_frame(spec, result).to_csv(fh, index=False))
    atomic_write(outdir / "final.csv", lambda fh: final_frame(spec, result).to_csv(fh, index=False))
    if result.prob is not None:
        seeds = np.asarray(result.seeds, dtype=np.int64)
        atomic_write(
            outdir / "boundary.npz",
            lambda fh: np.savez_compressed(fh, seeds=seeds, grid_x=result.grid_x, grid_y=result.grid_y, prob=result.prob),
        )
    meta = run_meta(spec, result, chunk, started)
    atomic_write(outdir / "meta.json", lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
