"""Compare two runs' results folders variant by variant: ``python -m reglab compare A B``.

For reproducibility checks across machines, torch versions and configs: A and B are results folders
(``results``, ``runs/<run_name>/results``: the workflow's named runs). Each one's studies are the
``per_seed.csv`` aggregates it holds (:func:`reglab.contract.aggregate_path`); for every (study,
variant) in both, the final test accuracy of its seeds (diverged seeds left out, as everywhere) is
compared:

* n, mean and std (ddof 1) in each run;
* the difference of the means B - A with its Welch 95% CI (:func:`reglab.stats.shift_ci`);
* a two-sided Welch t-test and a two-sided Mann-Whitney U test;
* TOST of ``|mean(B) - mean(A)| < delta`` (:func:`reglab.stats.tost`, two one-sided Welch t-tests):
  "the same within ±delta" when its p is below alpha, else "not shown equivalent" (also with fewer
  than 2 seeds in a run);
* whether the per-seed values are identical: the same seeds with bit-identical values of every
  per-seed metric that is not a wall time (:data:`IDENTITY_COLUMNS`), as the same code, versions
  and config on the same kind of machine give.

Each kind of p-value is Holm-corrected across the compared variants (:func:`reglab.stats.adjust_p`);
verdicts use the corrected TOST p. Studies and variants in only one run are listed as such. The
page's header gives each run's provenance: its config hash (``config.json``) and, from its run
directories' ``meta.json``, the code hash, git commit, versions and machine (several values of one
field are all listed). A missing folder, a folder without aggregates or a malformed file raises one
:class:`reglab.contract.ResultsError` naming it.
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from . import contract, stats
from .contract import METRICS, ResultsError

#: the metric compared
METRIC = "final_test_acc"
#: the per_seed.csv columns that must be equal, seed by seed, for two runs to be "identical": every
#: per-seed metric but the wall times (they differ between runs of the same command)
IDENTITY_COLUMNS = ("n_epochs", *(name for name, m in METRICS.items() if m.unit != "s"), "diverged_epoch")
#: the per_seed.csv columns the comparison needs
REQUIRED_COLUMNS = ("variant", "seed", METRIC)
#: the columns of the ``--csv`` table, one row per (study, variant) of either run
CSV_COLUMNS = ("study", "variant", "status", "n_a", "n_b", "diverged_a", "diverged_b", "mean_a", "std_a",
               "mean_b", "std_b", "diff", "diff_ci_low", "diff_ci_high", "welch_p", "welch_p_holm",
               "mann_whitney_p", "mann_whitney_p_holm", "tost_p", "tost_p_holm", "delta", "verdict", "identical")
SAME, NOT_SHOWN = "the same within \u00b1{delta:g}", "not shown equivalent"
IDENTICAL = "identical per-seed values"
DASH = "\u2013"


@dataclass
class Run:
    """One results folder: its per_seed tables by study (in config order) and its provenance."""

    path: Path
    per_seed: dict[str, pd.DataFrame]
    provenance: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- reading
def _read_per_seed(path: Path) -> pd.DataFrame:
    """One per_seed.csv, names kept as text; ResultsError naming the file when it is malformed."""
    try:
        frame = pd.read_csv(path, dtype={"study": str, "variant": str}, keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ResultsError(f"{path}: cannot be read as CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: not a per_seed table (no column {', '.join(missing)})")
    for col in (METRIC, "seed"):
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            raise ResultsError(f"{path}: column {col} has a non-numeric value {frame[col][bad].iloc[0]!r}")
        frame[col] = values
    return frame


def _studies(results: Path) -> list[str]:
    """The studies whose per_seed.csv the folder holds, in its config's order (others after, sorted)."""
    pattern = contract.aggregate_path(glob.escape(str(results)), "*", "per_seed")
    found = {Path(p).parent.name for p in glob.glob(pattern)}
    if not found:
        raise ResultsError(f"{contract.aggregate_path(results, '<study>', 'per_seed')}: no aggregate table found "
                           "(not a results folder, or its runs are not aggregated yet)")
    config_file = Path(contract.config_path(results))
    order = list(contract.read_validated_config(config_file)[0].get("studies", {})) if config_file.is_file() else []
    return [s for s in order if s in found] + sorted(found - set(order))


def _distinct(values) -> str:
    """The distinct values, in order, joined ('' when none)."""
    return ", ".join(dict.fromkeys(str(v) for v in values if v not in (None, "")))


def run_provenance(results: Path) -> dict[str, str]:
    """A results folder's provenance: its run name and config hash (config.json) and, over every run
    directory's meta.json, the distinct code hashes, commits, versions and machines."""
    prov = {"folder": str(results)}
    config_file = Path(contract.config_path(results))
    if config_file.is_file():
        config, config_hash = contract.read_validated_config(config_file)
        prov["run name"] = str(config.get("run_name") or "(unnamed)")
        prov["config hash"] = config_hash
    else:
        prov["config hash"] = f"unknown (no {contract.CONFIG_FILE})"
    pattern = str(Path(contract.job_dir(glob.escape(str(results)), "*", "*", "*"), "*", contract.META))
    metas = [contract.read_json(p) for p in sorted(glob.glob(pattern))]
    metas = [m for m in metas if isinstance(m, dict)]
    prov["run directories"] = str(len(metas))
    git = [m.get("git") if isinstance(m.get("git"), dict) else {} for m in metas]
    prov["code hash"] = _distinct(m.get("code_hash") for m in metas)
    prov["git commit"] = _distinct(f"{str(g.get('commit', ''))[:12]}{' (dirty)' if g.get('dirty') else ''}"
                                   for g in git if g.get("commit"))
    versions = [m.get("versions") if isinstance(m.get("versions"), dict) else {} for m in metas]
    for name in dict.fromkeys(k for v in versions for k in v):
        prov[name] = _distinct(v.get(name) for v in versions)
    for key in ("accelerator", "threads", "hostname", "cpu"):
        prov[key] = _distinct(m.get(key) for m in metas)
    started = sorted(str(m["started"]) for m in metas if m.get("started"))
    finished = sorted(str(m["finished"]) for m in metas if m.get("finished"))
    if started and finished:
        prov["trained"] = f"{started[0]} to {finished[-1]}"
    return {k: v for k, v in prov.items() if v != ""}


def read_run(results: str | Path) -> Run:
    """A results folder's per_seed tables and provenance; ResultsError when it is missing or malformed."""
    results = Path(results)
    if not results.is_dir():
        raise ResultsError(f"{results}: results folder not found")
    per_seed = {s: _read_per_seed(Path(contract.aggregate_path(results, s, "per_seed"))) for s in _studies(results)}
    return Run(results, per_seed, run_provenance(results))


# --------------------------------------------------------------------------- comparing
def _variants(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["variant"].astype(str)))


def _rows(frame: pd.DataFrame, variant: str) -> pd.DataFrame:
    return frame[frame["variant"].astype(str) == variant]


def _diverged(rows: pd.DataFrame) -> int:
    if "diverged_epoch" not in rows.columns:
        return 0
    return int((pd.to_numeric(rows["diverged_epoch"], errors="coerce").fillna(0) > 0).sum())


def identical(a_rows: pd.DataFrame, b_rows: pd.DataFrame) -> bool:
    """The same seeds with bit-identical values of every :data:`IDENTITY_COLUMNS` column both tables have."""
    a, b = a_rows.sort_values("seed", kind="stable"), b_rows.sort_values("seed", kind="stable")
    if a["seed"].tolist() != b["seed"].tolist():
        return False
    for col in (c for c in IDENTITY_COLUMNS if c in a.columns and c in b.columns):
        x = pd.to_numeric(a[col], errors="coerce").to_numpy(dtype=float)
        y = pd.to_numeric(b[col], errors="coerce").to_numpy(dtype=float)
        if not np.array_equal(x, y, equal_nan=True):
            return False
    return True


def compare_variant(a_rows: pd.DataFrame, b_rows: pd.DataFrame, delta: float) -> dict:
    """One variant's numbers in A and B (uncorrected p-values; see :func:`compare_runs`)."""
    a = stats.metric_values(a_rows, None, str(a_rows["variant"].iloc[0]), METRIC)
    b = stats.metric_values(b_rows, None, str(b_rows["variant"].iloc[0]), METRIC)
    shift = stats.shift_ci(b, a)
    return {
        "n_a": int(a.size), "n_b": int(b.size), "diverged_a": _diverged(a_rows), "diverged_b": _diverged(b_rows),
        "mean_a": float(a.mean()) if a.size else math.nan, "std_a": stats.std(a),
        "mean_b": float(b.mean()) if b.size else math.nan, "std_b": stats.std(b),
        "diff": float(b.mean() - a.mean()) if a.size and b.size else math.nan,
        "diff_ci_low": shift["shift_low"], "diff_ci_high": shift["shift_high"],
        "welch_p": stats.welch_t(b, a)["p_value"], "mann_whitney_p": stats.mann_whitney(b, a)["p_value"],
        "tost_p": stats.tost(b, a, delta=delta)["p_value"],
        "identical": identical(a_rows, b_rows),
    }


def compare_runs(a: Run, b: Run, delta: float = 0.01, alpha: float = 0.05) -> dict:
    """Every (study, variant) of A and B: compared where in both, else marked as in one run only.

    Returns ``{"rows": [...], "studies_only": {"A": [...], "B": [...]}, "delta", "alpha"}``; each row
    has the :data:`CSV_COLUMNS`; the ``*_p_holm`` columns are Holm-corrected over the rows in both
    runs, and ``verdict`` is the TOST verdict at ``alpha`` on the corrected p.
    """
    rows = []
    for study in [*a.per_seed, *(s for s in b.per_seed if s not in a.per_seed)]:
        if study not in a.per_seed or study not in b.per_seed:
            continue
        fa, fb = a.per_seed[study], b.per_seed[study]
        in_a, in_b = _variants(fa), _variants(fb)
        for variant in [*in_a, *(v for v in in_b if v not in in_a)]:
            row = {"study": study, "variant": variant, "delta": delta}
            if variant in in_a and variant in in_b:
                row.update(status="both", **compare_variant(_rows(fa, variant), _rows(fb, variant), delta))
            else:
                row["status"] = "only in A" if variant in in_a else "only in B"
            rows.append(row)
    both = [r for r in rows if r["status"] == "both"]
    for test in ("welch", "mann_whitney", "tost"):
        for r, p in zip(both, stats.adjust_p([r[f"{test}_p"] for r in both], "holm")):
            r[f"{test}_p_holm"] = float(p)
    for r in both:
        r["verdict"] = SAME.format(delta=delta) if r["tost_p_holm"] < alpha else NOT_SHOWN
    return {
        "rows": rows, "delta": delta, "alpha": alpha,
        "studies_only": {"A": [s for s in a.per_seed if s not in b.per_seed],
                         "B": [s for s in b.per_seed if s not in a.per_seed]},
    }


# --------------------------------------------------------------------------- writing
def _num(x, digits: int = 4) -> str:
    """A number with ``digits`` decimals, a minus sign for negatives, a dash for NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return f"{round(float(x), digits) + 0.0:.{digits}f}".replace("-", "\u2212")


def _p(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return DASH
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def _n(n: int, diverged: int) -> str:
    return f"{n} (+{diverged} diverged)" if diverged else str(n)


def row_view(r: dict) -> dict:
    """A compared row as the page's cells."""
    return {
        "variant": r["variant"], "n_a": _n(r["n_a"], r["diverged_a"]), "n_b": _n(r["n_b"], r["diverged_b"]),
        "a": f"{_num(r['mean_a'])} \u00b1 {_num(r['std_a'])}", "b": f"{_num(r['mean_b'])} \u00b1 {_num(r['std_b'])}",
        "diff": f"{_num(r['diff'])} [{_num(r['diff_ci_low'])}, {_num(r['diff_ci_high'])}]",
        **{test: f"{_p(r[f'{test}_p'])} ({_p(r[f'{test}_p_holm'])})" for test in ("welch", "mann_whitney", "tost")},
        "verdict": r["verdict"], "same": r["verdict"] != NOT_SHOWN, "identical": r["identical"],
    }


def page_view(result: dict, a: Run, b: Run) -> dict:
    """Everything the template shows."""
    both = [r for r in result["rows"] if r["status"] == "both"]
    studies = {}
    for r in result["rows"]:
        s = studies.setdefault(r["study"], {"name": r["study"], "rows": [], "only_a": [], "only_b": []})
        if r["status"] == "both":
            s["rows"].append(row_view(r))
        else:
            s["only_a" if r["status"] == "only in A" else "only_b"].append(r["variant"])
    keys = list(dict.fromkeys([*a.provenance, *b.provenance]))
    provenance = [(k, a.provenance.get(k, DASH), b.provenance.get(k, DASH),
                   k not in ("folder", "run name", "run directories", "trained")
                   and a.provenance.get(k) != b.provenance.get(k)) for k in keys]
    n_identical = sum(r["identical"] for r in both)
    n_same = sum(r["verdict"] != NOT_SHOWN for r in both)
    only = sum(r["status"] != "both" for r in result["rows"])
    return {
        "a": str(a.path), "b": str(b.path), "delta": f"{result['delta']:g}", "alpha": f"{result['alpha']:g}",
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "provenance": provenance, "studies": list(studies.values()),
        "studies_only_a": result["studies_only"]["A"], "studies_only_b": result["studies_only"]["B"],
        "n_both": len(both), "n_identical": n_identical, "n_same": n_same, "n_only": only,
        "all_identical": bool(both) and n_identical == len(both) and not only
        and not result["studies_only"]["A"] and not result["studies_only"]["B"],
        "same_label": SAME.format(delta=result["delta"]), "identical_label": IDENTICAL,
    }


def summary_line(result: dict) -> str:
    """One line for the terminal."""
    both = [r for r in result["rows"] if r["status"] == "both"]
    same = sum(r["verdict"] != NOT_SHOWN for r in both)
    text = (f"{len(both)} variants in both runs: {same} {SAME.format(delta=result['delta'])}, "
            f"{len(both) - same} {NOT_SHOWN}; {sum(r['identical'] for r in both)} with {IDENTICAL}")
    only = sum(r["status"] != "both" for r in result["rows"])
    studies_only = len(result["studies_only"]["A"]) + len(result["studies_only"]["B"])
    return text + (f"; {only} variants and {studies_only} studies in one run only" if only or studies_only else "")


def render_compare(result: dict, a: Run, b: Run, out_html: str | Path) -> None:
    """Write the comparison page (one self-contained HTML file, Jinja2 autoescaped), atomically."""
    env = Environment(loader=PackageLoader("reglab"), autoescape=select_autoescape(default=True))
    html = env.get_template("compare.html.j2").render(**page_view(result, a, b))
    contract.write_text(html, out_html)


def write_compare_csv(result: dict, out_csv: str | Path) -> None:
    """Write the comparison table (:data:`CSV_COLUMNS`, one row per (study, variant)), atomically."""
    contract.write_csv(pd.DataFrame(result["rows"], columns=list(CSV_COLUMNS)), out_csv)


def compare(a: str | Path, b: str | Path, out_html: str | Path, delta: float = 0.01, alpha: float = 0.05,
            out_csv: str | Path | None = None) -> dict:
    """Read both folders, compare them, write the page (and the CSV); returns :func:`compare_runs`'s result."""
    run_a, run_b = read_run(a), read_run(b)
    result = compare_runs(run_a, run_b, delta, alpha)
    render_compare(result, run_a, run_b, out_html)
    if out_csv is not None:
        write_compare_csv(result, out_csv)
    return result
