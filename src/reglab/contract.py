"""The results contract: where each file of a run lives, its format version, the metrics read
from it, and the one way every step writes a file.

Every writer and reader of results (``results``, ``data``, ``aggregate``, ``report``) and the
workflow's rules (``workflow/rules/common.smk``) take paths, file names and column lists from here.
This module imports no torch, so the workflow and the aggregation load it cheaply.

Layout under a results folder (``results/`` by default)::

    datasets/{dataset}.npz                  one generated dataset
    runs/{study}/{pack}/chunk{k}/{variant}/ one variant's run: history.csv, final.csv,
                                            boundary.npz (2-D binary data only), meta.json
    aggregate/{study}/{name}.csv            per-study tables (:data:`AGGREGATES`; and :data:`VARIANCE`
                                            for a study with variance decomposition runs)
    config.json                             the validated config the report renders
    specs/{study}/{pack}.json               the variant specs one pack's training jobs read
    specs/{study}.runs.json                 the runs a study aggregates: {dir, study, variant}; a
                                            variant shared with an earlier study lies under that one

The per-seed metrics and the summary table's columns are registries (:data:`METRICS`,
:data:`SUMMARY`): aggregation computes, statistics test, the report formats and the config schema
allows (claims' ``metric``) what they list. A new metric or summary column is one entry.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: version of the run-directory format; a reader refuses files of another version
SCHEMA_VERSION = 1

# --------------------------------------------------------------------------- layout
HISTORY, FINAL, BOUNDARY, META = "history.csv", "final.csv", "boundary.npz", "meta.json"
AGGREGATES = ("finals", "per_seed", "curves", "summary", "runtime")
#: the aggregate table of a study's variance decomposition (written only for a study that has one)
VARIANCE = "variance"
#: its columns: per variant and source of randomness (``seeds``: the study's ordinary seeds), the
#: std (ddof 1) of final test accuracy over the n seeds that did not diverge, its chi-square 95% CI
VARIANCE_COLUMNS = ("study", "variant", "source", "run", "n", "std", "std_ci_low", "std_ci_high", "mean")
CONFIG_FILE = "config.json"


def dataset_path(results: str | os.PathLike, dataset: str) -> str:
    """The npz file of one dataset."""
    return f"{results}/datasets/{dataset}.npz"


def job_dir(results: str | os.PathLike, study: str, pack: str, chunk: int | str) -> str:
    """The directory of one training job: a run directory per variant of the pack."""
    return f"{results}/runs/{study}/{pack}/chunk{chunk}"


def variant_run_dirs(results: str | os.PathLike, study: str, variant: str) -> list[Path]:
    """A variant's run directories under ``results`` (one per job that trained it), in chunk order."""
    runs = Path(results) / "runs" / study
    dirs = [d for d in runs.glob(f"*/chunk*/{variant}") if d.is_dir()]
    return sorted(dirs, key=lambda d: int(d.parent.name.removeprefix("chunk") or 0))


def aggregate_dir(results: str | os.PathLike, study: str) -> str:
    """The folder of a study's aggregate tables."""
    return f"{results}/aggregate/{study}"


def aggregate_path(results: str | os.PathLike, study: str, name: str) -> str:
    """One aggregate table (``name`` of :data:`AGGREGATES`) of a study."""
    return f"{aggregate_dir(results, study)}/{name}.csv"


def config_path(results: str | os.PathLike) -> str:
    """The validated config of a run, as JSON."""
    return f"{results}/{CONFIG_FILE}"


def pack_specs_path(results: str | os.PathLike, study: str, pack: str) -> str:
    """The variant specs one pack's training jobs read (a JSON list)."""
    return f"{results}/specs/{study}/{pack}.json"


def study_runs_path(results: str | os.PathLike, study: str) -> str:
    """The runs one study's aggregation reads (a JSON list: see :func:`read_study_runs`)."""
    return f"{results}/specs/{study}.runs.json"


def sequential_look_dir(results: str | os.PathLike, study: str, look) -> str:
    """The folder of one look of a sequentially seeded study: its aggregate so far and ``decision.json``."""
    return f"{results}/sequential/{study}/look{look}"


def read_study_runs(path: str | os.PathLike) -> list[dict]:
    """The runs a study aggregates, from its runs file (:func:`study_runs_path`); ResultsError otherwise.

    The file is a non-empty JSON list of ``{"dir", "study", "variant"}``: a run directory and the
    study and variant it is aggregated as. A variant whose training is the same as another's (same
    spec but for the names, same seeds: ``reglab.config.content_key``) is trained once, so ``dir``
    may be another study's or variant's run. A bare path (a runs file of an earlier reglab) stands
    for itself: it is returned as ``{"dir": path}`` and keeps the names its meta.json gives.
    """
    runs = []
    for i, entry in enumerate(read_json_list(path, "runs")):
        entry = {"dir": entry} if isinstance(entry, str) else entry
        fields = set(entry) if isinstance(entry, dict) else set()
        if fields not in ({"dir"}, {"dir", "study", "variant"}) or not all(
                isinstance(value, str) and value for value in entry.values()):
            raise ResultsError(f"{path}: entry {i} is not a run (a JSON object with the strings dir, study "
                               f"and variant), got {entry!r}")
        runs.append(entry)
    return runs


def labelled_run_dirs(results: str | os.PathLike, study: str, variants) -> dict[str, list[Path]]:
    """variant -> the run directories a study shows it from, in chunk order, for each of ``variants``.

    From the study's runs file (:func:`read_study_runs`) where the workflow wrote one: a shared
    variant's runs live under another study's folder; each is looked up under ``results`` by its
    place in the layout (``runs/{study}/{pack}/chunk{k}/{variant}``, the last five parts of its
    path). Without a runs file, the variant's run directories under ``runs/{study}/``
    (:func:`variant_run_dirs`).
    """
    path = Path(study_runs_path(results, study))
    if not path.is_file():
        return {v: variant_run_dirs(results, study, v) for v in variants}
    found = {v: [] for v in variants}
    for run in read_study_runs(path):  # in chunk order per variant, as the workflow writes it
        parts = Path(run["dir"]).parts
        variant = run.get("variant", parts[-1])
        if run.get("study", study) == study and variant in found:
            in_layout = len(parts) >= 5 and parts[-5] == "runs"
            found[variant].append(Path(results, *parts[-5:]) if in_layout else Path(run["dir"]))
    return found


class ResultsError(ValueError):
    """A results file is missing, truncated or malformed; the message names the file."""


# --------------------------------------------------------------------------- the validated config
CONFIG_FORMAT = "reglab validated config"


def write_validated_config(config: dict, config_hash: str, path: str | os.PathLike) -> None:
    """Write a config that :func:`reglab.config.validate_config` returned, for the steps to trust."""
    write_json({"format": CONFIG_FORMAT, "config_hash": config_hash, "config": config}, path)


def read_validated_config(path: str | os.PathLike) -> tuple[dict, str]:
    """(config, config_hash) from a file :func:`write_validated_config` wrote; ResultsError otherwise."""
    try:
        envelope = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{path}: validated config file is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(envelope, dict) or envelope.get("format") != CONFIG_FORMAT:
        raise ResultsError(f"{path}: not a validated config written by the workflow "
                           f"(expected a JSON object with format {CONFIG_FORMAT!r})")
    return envelope["config"], str(envelope["config_hash"])


def write_json(value, path: str | os.PathLike) -> None:
    """A JSON value, atomically."""
    write_text(json.dumps(value, indent=1), path)


def read_json(path: str | os.PathLike):
    """A JSON value from ``path``; ResultsError naming the file when it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot be read as JSON ({exc})") from None


def read_json_list(path: str | os.PathLike, what: str) -> list:
    """A non-empty JSON list from ``path`` (``what`` its entries, for the message); ResultsError otherwise."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(value, list) or not value:
        raise ResultsError(f"{path}: expected a non-empty JSON list of {what}")
    return value


# --------------------------------------------------------------------------- run files
#: what training records per seed and epoch (history.csv) and once per seed (final.csv)
HISTORY_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
HISTORY_COLUMNS = ("study", "variant", "seed", "epoch", *HISTORY_METRICS, "epoch_time_s")
FINAL_COLUMNS = ("study", "variant", "seed", *HISTORY_METRICS)  # + diverged_epoch (optional in old files)
META_KEYS = ("schema_version", "study", "variant", "chunk", "seeds", "fit_time_s", "peak_rss_mb", "threads")


# --------------------------------------------------------------------------- writing
def atomic_write(path: str | os.PathLike, write: Callable, text: bool = False) -> None:
    """Call ``write(file_object)`` on a new file beside ``path``, flush it to disk, rename it into place.

    The file gets the permissions of any new file (``0o666`` less the umask: ``0o644`` under umask
    022), so colleagues on a shared filesystem can read it. ``text`` opens it in text mode (UTF-8,
    no newline translation), else binary. On any failure (disk full, read-only folder, an error in
    ``write``) the new file is removed and an existing ``path`` is left as it was; an OSError is
    raised again naming ``path`` (not the temporary file), with its errno and reason.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8", "newline": ""} if text else {})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # e.g. the folder became read-only: report the first problem
            pass
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error (errno, reason) about ``path``: OSError picks the subclass from the errno."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def write_csv(frame, path: str | os.PathLike) -> None:
    """A pandas DataFrame as CSV (no index), atomically."""
    atomic_write(path, lambda fh: frame.to_csv(fh, index=False), text=True)


def write_text(content: str, path: str | os.PathLike) -> None:
    """Text (UTF-8), atomically."""
    atomic_write(path, lambda fh: fh.write(content), text=True)


# --------------------------------------------------------------------------- per-seed metrics
#: the test accuracy that "epochs to 80%" and its kin wait for; comparisons allow float32 round-off
ACC_THRESHOLD, ACC_TOL = 0.80, 1e-6


@dataclasses.dataclass(frozen=True)
class JobSeeds:
    """One training job's values per seed (rows in seed order), the input of every metric.

    ``history`` maps each of :data:`HISTORY_METRICS` to ``[seeds, epochs]``; ``final`` maps them to
    ``[seeds]`` (inference mode after training); ``epoch_time_s`` is the job's wall time per epoch
    ``[epochs]`` for all ``n_seeds`` replicas together; ``fit_time_s`` the job's whole training time.
    """

    history: dict[str, np.ndarray]
    final: dict[str, np.ndarray]
    epoch_time_s: np.ndarray
    fit_time_s: float
    n_seeds: int

    @property
    def reached(self) -> np.ndarray:
        """``[seeds, epochs]``: test accuracy at or above :data:`ACC_THRESHOLD`."""
        return self.history["test_acc"] >= ACC_THRESHOLD - ACC_TOL


@dataclasses.dataclass(frozen=True)
class Metric:
    """A per-seed metric: how it is computed from a job, how it reads, and how claims may use it.

    ``better`` is "higher", "lower" or None (neither); ``never`` is the value a missing entry counts
    as in rank tests (a seed that never reached 80% is slower than any that did); ``unit`` "s"
    formats as a duration. ``claimable`` metrics may be named by a config claim.
    """

    name: str
    label: str
    compute: Callable[[JobSeeds], np.ndarray]
    digits: int = 3
    better: str | None = "higher"
    claimable: bool = True
    never: float | None = None
    unit: str = ""


def _epochs_to(job: JobSeeds) -> np.ndarray:
    reached = job.reached
    return np.where(reached.any(axis=1), reached.argmax(axis=1) + 1.0, np.nan)


def _time_to(job: JobSeeds) -> np.ndarray:
    reached = job.reached
    elapsed = np.cumsum(job.epoch_time_s) / job.n_seeds  # per replica: the job's time shared out
    return np.where(reached.any(axis=1), elapsed[reached.argmax(axis=1)], np.nan)


def _volatility(job: JobSeeds) -> np.ndarray:
    acc = job.history["test_acc"]
    if acc.shape[1] < 2:
        return np.full(acc.shape[0], np.nan)
    return np.abs(np.diff(acc, axis=1)).mean(axis=1)


#: the closing share of the epochs over which "late" training metrics are averaged
LATE_FRACTION = 0.1


def _late_train_acc(job: JobSeeds) -> np.ndarray:
    """Mean over the last :data:`LATE_FRACTION` of the epochs (at least one) of the training accuracy
    Keras reports while it trains (running, in training mode): what "training accuracy hovers
    around 70-75%" is about, not the final accuracy in inference mode."""
    acc = job.history["train_acc"]
    k = max(1, math.ceil(acc.shape[1] * LATE_FRACTION))
    return acc[:, -k:].mean(axis=1)


_METRICS = (
    Metric("final_test_acc", "Final test acc", lambda j: j.final["test_acc"]),
    Metric("final_train_acc", "Final train acc", lambda j: j.final["train_acc"]),
    Metric("final_train_loss", "Final train loss", lambda j: j.final["train_loss"], better="lower", claimable=False),
    Metric("final_test_loss", "Final test loss", lambda j: j.final["test_loss"], better="lower", claimable=False),
    Metric("late_train_acc", "Late train acc (running)", _late_train_acc),
    Metric("generalisation_gap", "Gap (train\u2212test)", lambda j: j.final["train_acc"] - j.final["test_acc"],
           better="lower"),
    Metric("epochs_to_80", "Epochs to 80%", _epochs_to, digits=1, better="lower", never=math.inf),
    Metric("peak_test_acc", "Peak test acc", lambda j: j.history["test_acc"].max(axis=1)),
    Metric("peak_epoch", "Peak epoch", lambda j: j.history["test_acc"].argmax(axis=1) + 1.0, digits=1, better=None),
    Metric("overfit_drop", "Drop from peak", lambda j: j.history["test_acc"].max(axis=1) - j.final["test_acc"],
           better="lower"),
    Metric("test_acc_volatility", "Test acc volatility", _volatility, digits=4, better="lower"),
    Metric("time_to_80_s", "Time to 80%", _time_to, better="lower", claimable=False, unit="s"),
    Metric("fit_time_s", "Fit time / seed", lambda j: np.full(j.n_seeds, j.fit_time_s / j.n_seeds),
           better="lower", claimable=False, unit="s"),
)
METRICS: dict[str, Metric] = {m.name: m for m in _METRICS}
#: the metrics a config claim may name (the schema's claim ``metric`` enum lists exactly these)
CLAIM_METRICS = tuple(m.name for m in _METRICS if m.claimable)


def seed_metrics(job: JobSeeds) -> dict[str, np.ndarray]:
    """Every registered metric of every seed of one job: name -> ``[seeds]`` floats (NaN: none)."""
    return {name: np.asarray(m.compute(job), dtype=float) for name, m in METRICS.items()}


# --------------------------------------------------------------------------- summary columns
def _stats():
    """reglab.stats, imported when a statistic is first computed (it needs scipy)."""
    from reglab import stats

    return stats


@dataclasses.dataclass(frozen=True)
class Statistic:
    """A statistic over a metric's per-seed values: the summary.csv columns it fills
    (``{metric}_{suffix}``) and the function that computes them, in that order."""

    suffixes: tuple[str, ...]
    compute: Callable[[np.ndarray], tuple[float, ...]]


STATISTICS: dict[str, Statistic] = {
    "mean_std": Statistic(("mean", "std"), lambda x: (_stats().mean_ci(x)[0], _stats().std(x))),
    "mean": Statistic(("mean",), lambda x: _stats().mean_ci(x)[:1]),
    "ci": Statistic(("ci_low", "ci_high"), lambda x: _stats().mean_ci(x)[1:]),
    "range": Statistic(("min", "max"), lambda x: _stats().value_range(x)),
    "iqm": Statistic(("iqm",), lambda x: (_stats().iqm(x),)),
    "iqm_ci": Statistic(("iqm", "iqm_ci_low", "iqm_ci_high"),
                        lambda x: (_stats().iqm(x), *_stats().bootstrap_ci(x, "iqm"))),
    "boot_ci": Statistic(("boot_ci_low", "boot_ci_high"), lambda x: _stats().bootstrap_ci(x, "mean")),
    "never": Statistic(("never",), lambda x: (float(np.isnan(np.asarray(x, float)).sum()),)),
}


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the per-variant summary table: a statistic of a per-seed metric.

    Its values are the summary.csv columns ``{metric}_{suffix}`` of :data:`STATISTICS`; its header
    is ``label`` (default: the metric's label), its number format the metric's.
    """

    metric: str
    stat: str
    label: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f"{self.metric}_{s}" for s in STATISTICS[self.stat].suffixes)

    @property
    def header(self) -> str:
        return self.label or METRICS[self.metric].label


#: the summary table, left to right (after Variant and n); summary.csv holds every column they need
SUMMARY = (
    Column("final_train_acc", "mean_std"),
    Column("final_test_acc", "mean_std"),
    Column("final_test_acc", "ci", "Test acc 95% CI"),
    Column("final_test_acc", "boot_ci", "Test acc 95% bootstrap CI"),
    Column("final_test_acc", "iqm_ci", "Test acc IQM (95% bootstrap CI)"),
    Column("final_test_acc", "range", "Test min\u2013max"),
    Column("final_train_acc", "range", "Train min\u2013max"),
    Column("generalisation_gap", "mean_std"),
    Column("epochs_to_80", "mean_std"),
    Column("epochs_to_80", "never", "Never 80%"),
    Column("peak_test_acc", "mean_std"),
    Column("peak_epoch", "mean"),
    Column("fit_time_s", "mean"),
    Column("time_to_80_s", "mean"),
)


def summary_statistics(values: dict[str, np.ndarray]) -> dict[str, float]:
    """The summary.csv values of every :data:`SUMMARY` column, from a variant's per-seed metric values."""
    row = {}
    for column in SUMMARY:
        row.update(zip(column.columns, STATISTICS[column.stat].compute(values[column.metric])))
    return row


def summary_stat_columns() -> tuple[str, ...]:
    """The summary.csv columns that :data:`SUMMARY` fills, in table order."""
    return tuple(dict.fromkeys(c for column in SUMMARY for c in column.columns))
#: job-level times in summary.csv (measured per job, not per seed): header -> (mean, std) columns
RUNTIME_SUMMARY = {
    "Epoch time (job)": ("epoch_time_job_mean_s", "epoch_time_job_std_s"),
    "Epoch time / replica": ("epoch_time_replica_mean_s", "epoch_time_replica_std_s"),
}
