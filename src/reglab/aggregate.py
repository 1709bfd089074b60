"""Per-study tidy summaries from the run directories (:func:`reglab.contract.job_dir`).

``aggregate_study(run_dirs, outdir)`` writes, atomically, under ``outdir``:

* ``finals.csv``  - every seed's ``final.csv`` row, plus ``chunk``.
* ``per_seed.csv`` - one row per variant and seed: ``study, variant, chunk, seed, n_epochs``, every
  per-seed metric of :data:`reglab.contract.METRICS` (NaN where undefined, e.g. ``epochs_to_80`` of
  a seed that never reached 80%, and every metric of a diverged seed) and ``diverged_epoch``.
* ``curves.csv`` - WIDE: one row per ``variant, epoch`` with ``n`` (seeds) and, for each history
  metric: ``{metric}_mean``, ``{metric}_std`` (ddof 1, empty when n = 1) and ``{metric}_n``
  (finite values averaged).
* ``summary.csv`` - one row per variant, columns :func:`summary_columns`: counts, the statistics
  that :data:`reglab.contract.SUMMARY` lists, and the job-level epoch times.
* ``runtime.csv`` - one row per job, columns :data:`RUNTIME_COLUMNS`.
* ``variance.csv`` - only for a study with variance decomposition runs (runs whose meta.json spec
  has ``vary``): per variant and source of randomness, the std of final test accuracy over the
  seeds with its chi-square 95% CI (:func:`variance_table`); a stale one is removed otherwise.

Variants keep the order in which they first appear in ``run_dirs``. A missing, truncated or
malformed results file raises one :class:`ResultsError` naming the file and the problem; so do a
``meta.json`` of another ``schema_version`` than :data:`reglab.contract.SCHEMA_VERSION` and jobs of
one variant trained from different specs (results of different configs, which must not be mixed:
the message names both ``meta.json`` files), and runs trained by different code (their ``code_hash``,
:func:`reglab.provenance.code_hash`, differs: old results next to results of edited code, or of
other versions; the message names both). A run may be shared: the same training (same spec but
for the names, same seeds) serves every study and variant that lists it, each aggregating it under
its own names (``reglab.config.study_runs``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from . import contract
from .config import content_spec, spec_hash, variance_run_name
from .replicas import VARY
from .stats import std, std_ci
from .contract import FINAL, HISTORY, HISTORY_COLUMNS, HISTORY_METRICS, META, RUNTIME_SUMMARY, JobSeeds, ResultsError

RUNTIME_COLUMNS = ("study", "variant", "chunk", "n_seeds", "n_epochs", "fit_time_s",
                   "fit_time_per_seed_s", "epoch_time_mean_s", "epoch_time_std_s", "peak_rss_mb",
                   "threads", "accelerator", "engine")


def per_seed_columns() -> tuple[str, ...]:
    """per_seed.csv's columns: the seed's identity, then every registered metric."""
    return ("study", "variant", "chunk", "seed", "n_epochs", *contract.METRICS, "diverged_epoch")


def summary_columns() -> tuple[str, ...]:
    """summary.csv's columns: counts, the registered summary statistics, the job-level epoch times."""
    return ("study", "variant", "n", "diverged", "n_jobs", "n_epochs", *contract.summary_stat_columns(),
            *(c for pair in RUNTIME_SUMMARY.values() for c in pair))
#: metrics a diverged seed leaves empty (NaN) from its diverged_epoch on; checked against it per row
_NAN_OK = {"train_loss", "train_acc", "test_loss", "test_acc"}
_INT_COLUMNS = {"seed", "epoch"}


# --------------------------------------------------------------------------- reading
def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a results CSV, check its columns and numeric values; ResultsError on any problem."""
    _check_complete(path)
    parsed = _read_numbers(path, columns)
    if parsed is not None:
        return parsed
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


def _read_numbers(path: Path, columns: tuple[str, ...]) -> pd.DataFrame | None:
    """The common case of :func:`_read_csv`, ~3x faster: the CSV with ``columns[2:]`` parsed as numbers
    by pandas' C parser (NaN only where a diverged seed may leave it); None where anything needs
    :func:`_read_csv`'s checks and their messages (a value not a number, empty, a non-integer seed or
    epoch, a missing column, no rows, a file that does not parse)."""
    numeric = columns[2:]
    try:
        df = pd.read_csv(path, dtype=dict.fromkeys(columns[:2], str), keep_default_na=False,
                         na_values={c: ["", "nan", "NaN"] for c in numeric if c in _NAN_OK})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
        return None
    if df.empty or any(c not in df.columns for c in columns):
        return None
    for col in numeric:
        values = df[col]
        if values.dtype.kind not in "if" or (col not in _NAN_OK and values.isna().any()):
            return None
        if col in _INT_COLUMNS:
            if values.dtype.kind == "f":
                return None
            df[col] = values.astype("int64")
        else:
            df[col] = values.astype(float)
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
    missing = [k for k in contract.META_KEYS if k not in meta]
    if missing:
        raise ResultsError(f"{path}: missing keys {missing}")
    version = meta["schema_version"]
    if not _is_int(version) or version != contract.SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema_version {version!r}, but this reglab reads schema_version "
                           f"{contract.SCHEMA_VERSION} (written by another version: rerun its training job)")
    if not isinstance(meta["seeds"], list) or not meta["seeds"]:
        raise ResultsError(f"{path}: 'seeds' must be a non-empty list")
    if not all(_is_int(s) and s >= 0 for s in meta["seeds"]):
        raise ResultsError(f"{path}: 'seeds' must be non-negative integers, got {meta['seeds']!r}")
    if not _is_int(meta["chunk"]) or meta["chunk"] < 0:
        raise ResultsError(f"{path}: 'chunk' must be a non-negative integer, got {meta['chunk']!r}")
    for key in ("fit_time_s", "threads"):
        if not isinstance(meta[key], (int, float)) or isinstance(meta[key], bool):
            raise ResultsError(f"{path}: {key!r} must be a number, got {meta[key]!r}")
    for key in ("config_hash", "code_hash"):
        if not isinstance(meta.get(key, ""), str):
            raise ResultsError(f"{path}: {key!r} must be a string, got {meta[key]!r}")
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
    meta = _read_meta(run_dir / META)
    hist = _read_csv(run_dir / HISTORY, HISTORY_COLUMNS)
    final = _read_csv(run_dir / FINAL, contract.FINAL_COLUMNS)
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


def seed_metrics(hist: pd.DataFrame, final: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Per-seed metrics of one job (``n_epochs``, every registered metric, ``diverged_epoch``), by seed.

    No metric of a diverged seed counts: they are all NaN.
    """
    fin = final.set_index("seed").sort_index()
    job = JobSeeds(
        history={m: hist.pivot(index="seed", columns="epoch", values=m).loc[fin.index].to_numpy(float)
                 for m in HISTORY_METRICS},
        final={m: fin[m].to_numpy(float) for m in HISTORY_METRICS},
        epoch_time_s=_job_epoch_times(hist), fit_time_s=float(meta["fit_time_s"]), n_seeds=len(meta["seeds"]),
    )
    diverged = fin["diverged_epoch"].to_numpy(dtype=int)
    values = {name: np.where(diverged > 0, np.nan, v) for name, v in contract.seed_metrics(job).items()}
    return pd.DataFrame({"seed": fin.index.to_numpy(), "n_epochs": job.history["test_acc"].shape[1],
                         **values, "diverged_epoch": diverged})


def runtime_row(hist: pd.DataFrame, meta: dict) -> dict:
    """One runtime.csv row for a job."""
    times = _job_epoch_times(hist)
    n_seeds = len(meta["seeds"])
    return {
        "study": str(meta["study"]), "variant": str(meta["variant"]), "chunk": int(meta["chunk"]),
        "n_seeds": n_seeds, "n_epochs": times.size, "fit_time_s": float(meta["fit_time_s"]),
        "fit_time_per_seed_s": float(meta["fit_time_s"]) / n_seeds,
        "epoch_time_mean_s": float(times.mean()),
        "epoch_time_std_s": std(times),
        "peak_rss_mb": meta["peak_rss_mb"], "threads": meta["threads"],
        "accelerator": meta.get("accelerator", ""),
        "engine": meta.get("engine", ""),  # fused or torch (reglab.fused); runs before the fused engine: none
    }


# --------------------------------------------------------------------------- per study
def curves_table(history: pd.DataFrame) -> pd.DataFrame:
    """Wide per-variant, per-epoch mean/std/n of each history metric (variant order kept)."""
    g = history.groupby(["variant", "epoch"], sort=False)[list(HISTORY_METRICS)]
    out = g.agg(["mean", "std", "count"])
    out.columns = [f"{m}_{'n' if s == 'count' else s}" for m, s in out.columns]
    out.insert(0, "n", history.groupby(["variant", "epoch"], sort=False)["seed"].nunique())
    out = out.reset_index()
    order = {v: i for i, v in enumerate(history["variant"].unique())}
    return out.sort_values(["variant", "epoch"], key=lambda c: c.map(order) if c.name == "variant" else c,
                           kind="stable").reset_index(drop=True)


def summary_row(ps: pd.DataFrame, epoch_times: list[tuple[np.ndarray, int]]) -> dict:
    """One summary.csv row from a variant's per-seed rows and its jobs' (epoch times, n_seeds).

    Diverged seeds are left out of every statistic: ``n`` counts the others, ``diverged`` them.
    """
    ok = ps["diverged_epoch"].fillna(0).to_numpy() == 0
    row = {"study": ps["study"].iloc[0], "variant": ps["variant"].iloc[0], "n": int(ok.sum()),
           "diverged": int((~ok).sum()), "n_jobs": len(epoch_times), "n_epochs": int(ps["n_epochs"].max())}
    row.update(contract.summary_statistics({m: ps.loc[ok, m].to_numpy(float) for m in contract.METRICS}))
    job = np.concatenate([t for t, _ in epoch_times])
    replica = np.concatenate([t / n for t, n in epoch_times])
    (job_mean, job_std), (replica_mean, replica_std) = RUNTIME_SUMMARY.values()
    row.update({job_mean: float(job.mean()), job_std: std(job),
                replica_mean: float(replica.mean()), replica_std: std(replica)})
    return row


def variance_table(per_seed: pd.DataFrame, sources: dict[str, str]) -> pd.DataFrame:
    """variance.csv: per variant, the std (ddof 1), its chi-square 95% CI and the mean of final test
    accuracy over the seeds (diverged ones left out) of the ordinary runs (source ``seeds``: init,
    order and draws vary, the split is fixed) and of each decomposition run varying one source
    (``sources``: run name -> the source its spec's ``vary`` names; ``all``: every source, the split
    too). A run is named :func:`reglab.config.variance_run_name` of its variant; variants keep the
    order of ``per_seed``, sources that of :data:`reglab.replicas.VARY`."""
    names = list(dict.fromkeys(per_seed["variant"]))
    runs: dict[str, dict[str, str]] = {}
    for run, source in sources.items():
        suffix = variance_run_name("", source)
        base = run[:-len(suffix)] if run.endswith(suffix) and len(run) > len(suffix) else run
        runs.setdefault(base, {})[source] = run
    position = {base: names.index(base) if base in names else min(names.index(r) for r in by.values())
                for base, by in runs.items()}
    rows = []
    for base in sorted(runs, key=position.get):
        by = runs[base]
        pairs = ([("seeds", base)] if base in names else []) + [(s, by[s]) for s in VARY if s in by]
        for source, run in pairs:
            ps = per_seed[per_seed["variant"] == run]
            ok = ps["diverged_epoch"].fillna(0).to_numpy() == 0
            values = ps.loc[ok, "final_test_acc"].to_numpy(float)
            values = values[np.isfinite(values)]
            s, low, high = std_ci(values)
            rows.append({"study": ps["study"].iloc[0], "variant": base, "source": source, "run": run,
                         "n": int(values.size), "std": s, "std_ci_low": low, "std_ci_high": high,
                         "mean": float(values.mean()) if values.size else float("nan")})
    return pd.DataFrame(rows, columns=list(contract.VARIANCE_COLUMNS))


def _trained_from(meta: dict) -> tuple[str, str]:
    """(what, digest) of the config a job was trained from: the hash of the spec its meta.json records,
    without the study and variant names (a shared run was trained under another study's or variant's
    names: reglab.config.content_spec), else (a meta.json without its spec) its ``config_hash``."""
    spec = meta.get("spec")
    if isinstance(spec, dict):
        return "spec hash (without names)", spec_hash(content_spec(spec))
    return "config_hash", meta.get("config_hash")


def _check_same_config(seen: dict, run_dir: Path, meta: dict, variant: str | None = None) -> None:
    """Refuse to mix jobs of one variant (``variant``: the name it is aggregated as, else its meta.json's)
    trained from different configs: the specs they were trained from, names left out, must agree."""
    variant = str(meta["variant"]) if variant is None else variant
    what, digest = _trained_from(meta)
    first = seen.setdefault(variant, (run_dir, digest))
    if first[1] != digest:
        raise ResultsError(
            f"{run_dir / 'meta.json'}: {what} {digest!r} differs from {first[1]!r} in "
            f"{first[0] / 'meta.json'}: variant {variant!r} mixes results of different configs "
            "(rerun the stale training jobs)")


def _check_same_code(first: tuple[Path, str | None] | None, run_dir: Path, meta: dict) -> tuple[Path, str | None]:
    """Refuse to mix runs trained by different code: ``first`` is (run directory, code_hash) of the
    study's first run (None for the first run itself); returns it. A meta.json without a code_hash
    (written before reglab recorded it) counts as a code of its own."""
    code = meta.get("code_hash")
    if first is None:
        return run_dir, code
    if code != first[1]:
        def name(digest: str | None) -> str:
            return "no code_hash (trained before reglab recorded it)" if digest is None else f"code_hash {digest!r}"

        raise ResultsError(
            f"{run_dir / 'meta.json'}: {name(code)}, but {first[0] / 'meta.json'} has {name(first[1])}: the study "
            "mixes runs trained by different code or package versions (rerun the training: snakemake reruns "
            "every training job whose code changed)")
    return first


def _labelled(run) -> tuple[Path, str | None, str | None]:
    """(run directory, study, variant) of a run given as a path (names: its meta.json's) or as a
    mapping {"dir", "study", "variant"} (reglab.contract.read_study_runs)."""
    if isinstance(run, Mapping):
        return Path(run["dir"]), run.get("study"), run.get("variant")
    return Path(run), None, None


def aggregate_study(runs: list, outdir: Path) -> None:
    """Read every job of one study and write finals/per_seed/curves/summary/runtime CSVs to outdir.

    ``runs`` are run directories, each a path (aggregated under the study and variant names of its
    meta.json) or a mapping ``{"dir", "study", "variant"}`` (a study's runs file,
    :func:`reglab.contract.read_study_runs`): a run shared by several studies or variants (the same
    training) is checked against its own meta.json, then aggregated under the names it is given.
    """
    if not runs:
        raise ResultsError(f"{outdir}: no run directories to aggregate")
    hists, finals, per_seed, runtime, times, hashes, code = [], [], [], [], {}, {}, None
    sources = {}  # variance decomposition runs: variant -> the source of randomness it varies
    for run_dir, study, variant in map(_labelled, runs):
        hist, final, meta = load_run(run_dir)
        study = str(meta["study"]) if study is None else study
        variant = str(meta["variant"]) if variant is None else variant
        _check_same_config(hashes, run_dir, meta, variant)
        code = _check_same_code(code, run_dir, meta)
        vary = meta["spec"].get("vary") if isinstance(meta.get("spec"), dict) else None
        if isinstance(vary, dict) and vary.get("source") in VARY:
            sources[variant] = vary["source"]
        hist, final = hist.assign(study=study, variant=variant), final.assign(study=study, variant=variant)
        n_seeds, chunk = len(meta["seeds"]), int(meta["chunk"])
        ps = seed_metrics(hist, final, meta)
        ps.insert(0, "chunk", chunk)
        ps.insert(0, "variant", variant)
        ps.insert(0, "study", study)
        hists.append(hist)
        finals.append(final.assign(chunk=chunk))
        per_seed.append(ps)
        runtime.append({**runtime_row(hist, meta), "study": study, "variant": variant})
        times.setdefault(variant, []).append((_job_epoch_times(hist), n_seeds))
    order = {v: i for i, v in enumerate(times)}
    per_seed_df = (pd.concat(per_seed, ignore_index=True)[list(per_seed_columns())]
                   .sort_values(["variant", "seed"], key=lambda c: c.map(order) if c.name == "variant" else c,
                                kind="stable").reset_index(drop=True))
    dup = per_seed_df.duplicated(["variant", "seed"])
    if dup.any():
        r = per_seed_df[dup].iloc[0]
        raise ResultsError(f"{outdir}: variant {r['variant']!r} seed {r['seed']} appears in more than one run directory")
    runtime_df = pd.DataFrame(runtime, columns=list(RUNTIME_COLUMNS))
    summary = [summary_row(per_seed_df[per_seed_df["variant"] == v], t) for v, t in times.items()]
    tables = {
        "summary": pd.DataFrame(summary, columns=list(summary_columns())),
        "per_seed": per_seed_df,
        "curves": curves_table(pd.concat(hists, ignore_index=True)),
        "finals": pd.concat(finals, ignore_index=True),
        "runtime": runtime_df,
    }
    for name in contract.AGGREGATES:
        contract.write_csv(tables[name], Path(outdir) / f"{name}.csv")
    variance = Path(outdir) / f"{contract.VARIANCE}.csv"
    if sources:
        contract.write_csv(variance_table(per_seed_df, sources), variance)
    else:
        variance.unlink(missing_ok=True)  # from an earlier config that decomposed this study's variance
