"""Per-study tidy summaries from the run directories (``results/runs/{study}/{variant}/chunk{k}``).

``aggregate_study(run_dirs, outdir)`` writes, atomically, under ``outdir``:

* ``finals.csv``  - every seed's ``final.csv`` row, plus ``chunk``.
* ``per_seed.csv`` - one row per variant and seed: ``study, variant, chunk, seed, n_epochs,
  final_train_acc, final_test_acc, final_train_loss, final_test_loss, generalisation_gap``
  (train - test), ``epochs_to_80`` (first epoch with test_acc >= threshold, empty when never),
  ``reached_80``, ``peak_test_acc``, ``peak_epoch`` (first epoch at the peak), ``overfit_drop``
  (peak - final test acc), ``test_acc_volatility`` (mean |epoch-to-epoch change| of test_acc),
  ``time_to_80_s`` (cumulative per-replica time to that epoch: job epoch time / seeds in job).
* ``curves.csv`` - WIDE: one row per ``variant, epoch`` with ``n`` (seeds) and, for each of
  ``train_loss, train_acc, test_loss, test_acc``: ``{metric}_mean``, ``{metric}_std`` (ddof 1,
  empty when n = 1) and ``{metric}_n`` (finite values averaged).
* ``summary.csv`` - one row per variant, columns :data:`SUMMARY_COLUMNS`.
* ``runtime.csv`` - one row per job, columns :data:`RUNTIME_COLUMNS`.

Variants keep the order in which they first appear in ``run_dirs``. Accuracy comparisons with
the threshold allow 1e-6 of float32 round-off. A missing, truncated or malformed results file
raises one :class:`ResultsError` naming the file and the problem; so do a ``meta.json`` of another
``schema_version`` than :data:`SCHEMA_VERSION` and jobs of one variant whose ``config_hash``es differ
(results of different configs, which must not be mixed: the message names both ``meta.json`` files).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .stats import mean_ci

HISTORY_COLUMNS = ("study", "variant", "seed", "epoch", "train_loss", "train_acc", "test_loss",
                   "test_acc", "epoch_time_s")
FINAL_COLUMNS = ("study", "variant", "seed", "train_loss", "train_acc", "test_loss", "test_acc")
META_KEYS = ("schema_version", "study", "variant", "chunk", "seeds", "fit_time_s", "peak_rss_mb", "threads")
#: the run-directory format this module reads (``reglab.results.SCHEMA_VERSION`` writes it; a test
#: keeps the two equal without importing torch here)
SCHEMA_VERSION = 1
CURVE_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
PER_SEED_COLUMNS = ("study", "variant", "chunk", "seed", "n_epochs", "final_train_acc",
                    "final_test_acc", "final_train_loss", "final_test_loss", "generalisation_gap",
                    "epochs_to_80", "reached_80", "peak_test_acc", "peak_epoch", "overfit_drop",
                    "test_acc_volatility", "time_to_80_s", "diverged_epoch")
RUNTIME_COLUMNS = ("study", "variant", "chunk", "n_seeds", "n_epochs", "fit_time_s",
                   "fit_time_per_seed_s", "epoch_time_mean_s", "epoch_time_std_s", "peak_rss_mb",
                   "threads", "accelerator")
SUMMARY_COLUMNS = (
    "study", "variant", "n", "diverged", "n_jobs", "n_epochs",
    *(f"final_{s}_acc_{k}" for s in ("train", "test")
      for k in ("mean", "std", "min", "max", "ci_low", "ci_high")),
    "final_train_loss_mean", "final_test_loss_mean", "gap_mean", "gap_std",
    "epochs_to_80_mean", "epochs_to_80_std", "reached_80", "never_80",
    "peak_test_acc_mean", "peak_test_acc_std", "peak_epoch_mean",
    "overfit_drop_mean", "test_acc_volatility_mean",
    "fit_time_job_mean_s", "fit_time_per_seed_s",
    "epoch_time_job_mean_s", "epoch_time_job_std_s",
    "epoch_time_replica_mean_s", "epoch_time_replica_std_s", "time_to_80_mean_s",
)
_TOL = 1e-6
#: metrics a diverged seed leaves empty (NaN) from its diverged_epoch on; checked against it per row
_NAN_OK = {"train_loss", "train_acc", "test_loss", "test_acc"}
_INT_COLUMNS = {"seed", "epoch"}


class ResultsError(ValueError):
    """A results file is missing, truncated or malformed; the message names the file."""


# --------------------------------------------------------------------------- reading
def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a results CSV, check its columns and numeric values; ResultsError on any problem."""
    _check_complete(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ResultsError(f"{path}: results file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot be parsed as CSV ({str(exc).strip()})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultsError(f"{path}: wrong columns: missing {missing}; found {list(df.columns)}")
    if df.empty:
        raise ResultsError(f"{path}: header only, no data rows (truncated?)")
    for col in columns[2:]:
        df[col] = _numeric(df[col], path, col)
    return df


def _check_complete(path: Path) -> None:
    """A results CSV exists, is not empty and ends with a newline (as pandas writes it): a file cut
    off mid-line is refused even where its last line happens to parse."""
    if not path.is_file():
        raise ResultsError(f"{path}: results file is missing")
    try:
        with path.open("rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                raise ResultsError(f"{path}: results file is empty")
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
    except OSError as exc:
        raise ResultsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if last != b"\n":
        raise ResultsError(f"{path}: the last line is incomplete (no final newline; truncated?)")


def _numeric(raw: pd.Series, path: Path, col: str) -> pd.Series:
    """Convert one column to numbers; empty or non-numeric cells raise ResultsError."""
    num = pd.to_numeric(raw, errors="coerce")
    if num.isna().any():  # slow path only when something did not parse
        text = raw.fillna("").astype(str).str.strip()
        empty = (text == "") & (col not in _NAN_OK)
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0]) + 1
            raise ResultsError(f"{path}: empty value in column {col!r} at data row {row} (truncated?)")
        bad = num.isna() & ~((text.str.lower().eq("nan") | text.eq("")) & (col in _NAN_OK))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ResultsError(f"{path}: column {col!r} has a bad value {text.iloc[row]!r} at data row {row + 1}")
    if col in _INT_COLUMNS:
        if (num != num.round()).any():
            row = int(np.flatnonzero((num != num.round()).to_numpy())[0])
            raise ResultsError(f"{path}: column {col!r} has a non-integer value {raw.iloc[row]!r} at data row {row + 1}")
        return num.astype("int64")
    return num.astype(float)


def _read_meta(path: Path) -> dict:
    """Read meta.json and check the keys aggregation needs."""
    if not path.is_file():
        raise ResultsError(f"{path}: results file is missing")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc}) (truncated?)") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(meta, dict):
        raise ResultsError(f"{path}: expected a JSON object")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ResultsError(f"{path}: missing keys {missing}")
    version = meta["schema_version"]
    if not _is_int(version) or version != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema_version {version!r}, but this reglab reads schema_version "
                           f"{SCHEMA_VERSION} (written by another version: rerun its training job)")
    if not isinstance(meta["seeds"], list) or not meta["seeds"]:
        raise ResultsError(f"{path}: 'seeds' must be a non-empty list")
    if not all(_is_int(s) and s >= 0 for s in meta["seeds"]):
        raise ResultsError(f"{path}: 'seeds' must be non-negative integers, got {meta['seeds']!r}")
    if not _is_int(meta["chunk"]) or meta["chunk"] < 0:
        raise ResultsError(f"{path}: 'chunk' must be a non-negative integer, got {meta['chunk']!r}")
    for key in ("fit_time_s", "threads"):
        if not isinstance(meta[key], (int, float)) or isinstance(meta[key], bool):
            raise ResultsError(f"{path}: {key!r} must be a number, got {meta[key]!r}")
    if not isinstance(meta.get("config_hash", ""), str):
        raise ResultsError(f"{path}: 'config_hash' must be a string, got {meta['config_hash']!r}")
    return meta


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _spec_epochs(meta: dict) -> int | None:
    """The number of epochs the job's spec trains, when meta.json records its spec."""
    spec = meta.get("spec")
    epochs = spec.get("training", {}).get("epochs") if isinstance(spec, dict) else None
    return epochs if _is_int(epochs) else None


def _check_job(run_dir: Path, hist: pd.DataFrame, final: pd.DataFrame, meta: dict) -> None:
    """Cross-check one job's files: same study/variant/seeds, every seed has epochs 1..E."""
    seeds = sorted(int(s) for s in meta["seeds"])
    for name, df in (("history.csv", hist), ("final.csv", final)):
        path = run_dir / name
        for key in ("study", "variant"):
            values = {str(v) for v in df[key].unique()}
            if values != {str(meta[key])}:
                raise ResultsError(f"{path}: {key} {sorted(values)} does not match meta.json ({meta[key]!r})")
        got = sorted(int(v) for v in df["seed"].unique())
        if got != seeds:
            raise ResultsError(f"{path}: seeds {got} do not match meta.json seeds {seeds} (truncated?)")
    if final["seed"].duplicated().any():
        raise ResultsError(f"{run_dir / 'final.csv'}: duplicate seed rows")
    counts = hist.groupby("seed")["epoch"].agg(["count", "min", "max", "nunique"])
    n_epochs = int(counts["max"].max())
    bad = counts[(counts["count"] != n_epochs) | (counts["min"] != 1) | (counts["nunique"] != n_epochs)]
    if len(bad):
        seed, row = bad.index[0], bad.iloc[0]
        raise ResultsError(f"{run_dir / 'history.csv'}: seed {seed} has {row['count']} rows for epochs "
                           f"{row['min']}..{row['max']}, expected epochs 1..{n_epochs} once each (truncated?)")
    expected = _spec_epochs(meta)
    if expected is not None and n_epochs != expected:
        raise ResultsError(f"{run_dir / 'history.csv'}: epochs 1..{n_epochs}, but meta.json's spec trains "
                           f"{expected} epochs (truncated?)")
    _check_missing_metrics(run_dir, hist, final)


def _check_missing_metrics(run_dir: Path, hist: pd.DataFrame, final: pd.DataFrame) -> None:
    """Empty metrics are allowed only where a seed diverged: from its diverged_epoch on."""
    diverged = final.set_index("seed")["diverged_epoch"]
    metrics = list(_NAN_OK)
    final_nan = final[metrics].isna().any(axis=1) & (final["diverged_epoch"].to_numpy() == 0)
    if final_nan.any():
        seed = int(final.loc[final_nan, "seed"].iloc[0])
        raise ResultsError(f"{run_dir / 'final.csv'}: seed {seed} has empty metrics but did not diverge (truncated?)")
    start = hist["seed"].map(diverged).to_numpy()
    allowed = (start > 0) & (hist["epoch"].to_numpy() >= start)
    bad = hist[metrics].isna().any(axis=1).to_numpy() & ~allowed
    if bad.any():
        row = hist[bad].iloc[0]
        raise ResultsError(f"{run_dir / 'history.csv'}: seed {int(row['seed'])} epoch {int(row['epoch'])} has empty "
                           "metrics but the seed did not diverge then (truncated?)")


def load_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(history, final, meta) of one job directory, checked; history sorted by seed and epoch."""
    run_dir = Path(run_dir)
    meta = _read_meta(run_dir / "meta.json")
    hist = _read_csv(run_dir / "history.csv", HISTORY_COLUMNS)
    final = _read_csv(run_dir / "final.csv", FINAL_COLUMNS)
    if "diverged_epoch" in final.columns:
        final["diverged_epoch"] = _numeric(final["diverged_epoch"].astype(str), run_dir / "final.csv", "diverged_epoch")
    else:  # files written before divergence was recorded
        final["diverged_epoch"] = 0
    _check_job(run_dir, hist, final, meta)
    hist = hist.sort_values(["seed", "epoch"], kind="stable").reset_index(drop=True)
    return hist, final.sort_values("seed", kind="stable").reset_index(drop=True), meta


# --------------------------------------------------------------------------- per job
def _job_epoch_times(hist: pd.DataFrame) -> np.ndarray:
    """The job's wall time per epoch (the same for every seed; averaged to be safe)."""
    return hist.groupby("epoch", sort=True)["epoch_time_s"].mean().to_numpy(dtype=float)


def seed_metrics(hist: pd.DataFrame, final: pd.DataFrame, n_seeds: int, threshold: float = 0.80) -> pd.DataFrame:
    """Per-seed metrics of one job (see the module docstring); rows ordered by seed."""
    acc = hist.pivot(index="seed", columns="epoch", values="test_acc").sort_index()
    seeds, acc = acc.index.to_numpy(), acc.to_numpy(dtype=float)
    reached = acc >= threshold - _TOL
    any_reached = reached.any(axis=1)
    first = reached.argmax(axis=1)
    cum = np.cumsum(_job_epoch_times(hist)) / n_seeds
    fin = final.set_index("seed").loc[seeds]
    peak = acc.max(axis=1)
    out = pd.DataFrame({
        "seed": seeds,
        "n_epochs": acc.shape[1],
        "final_train_acc": fin["train_acc"].to_numpy(),
        "final_test_acc": fin["test_acc"].to_numpy(),
        "final_train_loss": fin["train_loss"].to_numpy(),
        "final_test_loss": fin["test_loss"].to_numpy(),
        "generalisation_gap": (fin["train_acc"] - fin["test_acc"]).to_numpy(),
        "epochs_to_80": np.where(any_reached, first + 1, np.nan),
        "reached_80": any_reached,
        "peak_test_acc": peak,
        "peak_epoch": acc.argmax(axis=1) + 1,
        "overfit_drop": peak - fin["test_acc"].to_numpy(),
        "test_acc_volatility": (np.abs(np.diff(acc, axis=1)).mean(axis=1) if acc.shape[1] > 1
                                else np.full(len(seeds), np.nan)),
        "time_to_80_s": np.where(any_reached, cum[first], np.nan),
        "diverged_epoch": fin["diverged_epoch"].to_numpy(dtype=int),
    })
    diverged = out["diverged_epoch"].to_numpy() > 0  # no metric of a diverged seed counts
    if diverged.any():
        out["reached_80"] &= ~diverged
        for col in out.columns.difference(["seed", "n_epochs", "diverged_epoch", "reached_80"]):
            out[col] = out[col].astype(float).where(~diverged)
    return out


def runtime_row(hist: pd.DataFrame, meta: dict) -> dict:
    """One runtime.csv row for a job."""
    times = _job_epoch_times(hist)
    n_seeds = len(meta["seeds"])
    return {
        "study": str(meta["study"]), "variant": str(meta["variant"]), "chunk": int(meta["chunk"]),
        "n_seeds": n_seeds, "n_epochs": times.size, "fit_time_s": float(meta["fit_time_s"]),
        "fit_time_per_seed_s": float(meta["fit_time_s"]) / n_seeds,
        "epoch_time_mean_s": float(times.mean()),
        "epoch_time_std_s": float(times.std(ddof=1)) if times.size > 1 else math.nan,
        "peak_rss_mb": meta["peak_rss_mb"], "threads": meta["threads"],
        "accelerator": meta.get("accelerator", ""),
    }


# --------------------------------------------------------------------------- per study
def curves_table(history: pd.DataFrame) -> pd.DataFrame:
    """Wide per-variant, per-epoch mean/std/n of each history metric (variant order kept)."""
    g = history.groupby(["variant", "epoch"], sort=False)[list(CURVE_METRICS)]
    out = g.agg(["mean", "std", "count"])
    out.columns = [f"{m}_{'n' if s == 'count' else s}" for m, s in out.columns]
    out.insert(0, "n", history.groupby(["variant", "epoch"], sort=False)["seed"].nunique())
    out = out.reset_index()
    order = {v: i for i, v in enumerate(dict.fromkeys(history["variant"]))}
    return out.sort_values(["variant", "epoch"], key=lambda c: c.map(order) if c.name == "variant" else c,
                           kind="stable").reset_index(drop=True)


def _std(x) -> float:
    """Sample std of the finite values (NaN when fewer than 2)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(x.std(ddof=1)) if x.size > 1 else math.nan


def _mean(x) -> float:
    """Mean of the finite values (NaN when none)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def summary_row(ps: pd.DataFrame, rt: pd.DataFrame, epoch_times: list[tuple[np.ndarray, int]]) -> dict:
    """One summary.csv row from a variant's per-seed rows, runtime rows and (job epoch times, n_seeds).

    Diverged seeds are left out of every statistic: ``n`` counts the others, ``diverged`` them.
    """
    ok = ps["diverged_epoch"].fillna(0).to_numpy() == 0
    row = {"study": ps["study"].iloc[0], "variant": ps["variant"].iloc[0], "n": int(ok.sum()),
           "diverged": int((~ok).sum()), "n_jobs": len(rt), "n_epochs": int(ps["n_epochs"].max())}
    ps = ps[ok]
    for split in ("train", "test"):
        x = ps[f"final_{split}_acc"].to_numpy(float)
        m, lo, hi = mean_ci(x)
        row.update({f"final_{split}_acc_mean": m, f"final_{split}_acc_std": _std(x),
                    f"final_{split}_acc_min": float(x.min()) if x.size else math.nan,
                    f"final_{split}_acc_max": float(x.max()) if x.size else math.nan,
                    f"final_{split}_acc_ci_low": lo, f"final_{split}_acc_ci_high": hi})
    job = np.concatenate([t for t, _ in epoch_times])
    replica = np.concatenate([t / n for t, n in epoch_times])
    row.update({
        "final_train_loss_mean": _mean(ps["final_train_loss"]), "final_test_loss_mean": _mean(ps["final_test_loss"]),
        "gap_mean": _mean(ps["generalisation_gap"]), "gap_std": _std(ps["generalisation_gap"]),
        "epochs_to_80_mean": _mean(ps["epochs_to_80"]), "epochs_to_80_std": _std(ps["epochs_to_80"]),
        "reached_80": int(ps["reached_80"].sum()), "never_80": int((~ps["reached_80"].astype(bool)).sum()),
        "peak_test_acc_mean": _mean(ps["peak_test_acc"]), "peak_test_acc_std": _std(ps["peak_test_acc"]),
        "peak_epoch_mean": _mean(ps["peak_epoch"]), "overfit_drop_mean": _mean(ps["overfit_drop"]),
        "test_acc_volatility_mean": _mean(ps["test_acc_volatility"]),
        "fit_time_job_mean_s": _mean(rt["fit_time_s"]),
        "fit_time_per_seed_s": float(rt["fit_time_s"].sum() / rt["n_seeds"].sum()),
        "epoch_time_job_mean_s": _mean(job), "epoch_time_job_std_s": _std(job),
        "epoch_time_replica_mean_s": _mean(replica), "epoch_time_replica_std_s": _std(replica),
        "time_to_80_mean_s": _mean(ps["time_to_80_s"]),
    })
    return row


def _check_same_config(seen: dict, run_dir: Path, meta: dict) -> None:
    """Refuse to mix jobs of one variant trained from different configs (their ``config_hash``)."""
    variant, digest = str(meta["variant"]), meta.get("config_hash")
    first = seen.setdefault(variant, (run_dir, digest))
    if first[1] != digest:
        raise ResultsError(
            f"{run_dir / 'meta.json'}: config_hash {digest!r} differs from {first[1]!r} in "
            f"{first[0] / 'meta.json'}: variant {variant!r} mixes results of different configs "
            "(rerun the stale training jobs)")


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` via a temporary file in the same directory and os.replace.

    On any failure (disk full, read-only folder) the temporary file is removed, an existing ``path``
    is left as it was, and the OSError names ``path``.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df.to_csv(fh, index=False)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def aggregate_study(run_dirs: list[Path], outdir: Path, threshold: float = 0.80) -> None:
    """Read every job of one study and write finals/per_seed/curves/summary/runtime CSVs to outdir."""
    if not run_dirs:
        raise ResultsError(f"{outdir}: no run directories to aggregate")
    hists, finals, per_seed, runtime, times, hashes = [], [], [], [], {}, {}
    for run_dir in map(Path, run_dirs):
        hist, final, meta = load_run(run_dir)
        _check_same_config(hashes, run_dir, meta)
        n_seeds, chunk = len(meta["seeds"]), int(meta["chunk"])
        ps = seed_metrics(hist, final, n_seeds, threshold)
        ps.insert(0, "chunk", chunk)
        ps.insert(0, "variant", str(meta["variant"]))
        ps.insert(0, "study", str(meta["study"]))
        hists.append(hist)
        finals.append(final.assign(chunk=chunk))
        per_seed.append(ps)
        runtime.append(runtime_row(hist, meta))
        times.setdefault(str(meta["variant"]), []).append((_job_epoch_times(hist), n_seeds))
    order = {v: i for i, v in enumerate(times)}
    per_seed_df = (pd.concat(per_seed, ignore_index=True)[list(PER_SEED_COLUMNS)]
                   .sort_values(["variant", "seed"], key=lambda c: c.map(order) if c.name == "variant" else c,
                                kind="stable").reset_index(drop=True))
    dup = per_seed_df.duplicated(["variant", "seed"])
    if dup.any():
        r = per_seed_df[dup].iloc[0]
        raise ResultsError(f"{outdir}: variant {r['variant']!r} seed {r['seed']} appears in more than one run directory")
    runtime_df = pd.DataFrame(runtime, columns=list(RUNTIME_COLUMNS))
    summary = [summary_row(per_seed_df[per_seed_df["variant"] == v], runtime_df[runtime_df["variant"] == v], t)
               for v, t in times.items()]
    outdir = Path(outdir)
    write_csv_atomic(pd.concat(finals, ignore_index=True), outdir / "finals.csv")
    write_csv_atomic(per_seed_df, outdir / "per_seed.csv")
    write_csv_atomic(curves_table(pd.concat(hists, ignore_index=True)), outdir / "curves.csv")
    write_csv_atomic(pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)), outdir / "summary.csv")
    write_csv_atomic(runtime_df, outdir / "runtime.csv")
