"""Render the self-contained HTML report from the aggregates (Jinja2, autoescaped).

``render_report(config, results_dir, out_html, provenance)`` renders a validated config (see
:func:`reglab.config.validate_config`; nothing is checked or defaulted here again). It reads the
files of :mod:`reglab.contract`'s layout under ``results_dir``: each study's aggregate tables, its
dataset and its run directories (``boundary.npz``, ``meta.json``), the published YAML named by ``config["published"]`` (relative
to the CWD; its section is skipped when absent) and checks ``config["claims"]``. Figures are
inlined as PNG ``data:`` URIs and the CSS is inlined, so the page loads nothing from outside.

The dataset figure suits the data (:func:`reglab.plots.fig_dataset`: 2-D points, images or
sequences, any number of classes); the decision-boundary figure is shown only for studies with
``boundary.npz`` files (training writes them for 2-D binary data only), so image and sequence
studies have none, and a 2-D binary study without them gets a one-line note instead.

Each study's aggregate CSVs (:data:`reglab.contract.AGGREGATES`) can be downloaded from the page:
they are embedded byte for byte as ``data:text/csv;base64`` links named ``{study}_{name}.csv``
(:func:`study_downloads`); a file over :data:`MAX_EMBEDDED_CSV_BYTES` (a long run's curves.csv) is
named with its size and path instead, so the page stays one file of a few MB.

In a study with grids the per-variant figures show only its explicit variants and each grid's
baseline (:func:`figure_variants` states the rule); grid points are drawn by the grid figures and
listed in the summary under a collapsed "Grid points (N)". Seeds that diverged (summary.csv's
``diverged`` count, NaN metrics and boundaries) are shown as "n (+k diverged)" and left
out of the figures' means.
"""

from __future__ import annotations

import base64
import json
import math
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import yaml
from jinja2 import Environment, PackageLoader, select_autoescape

from . import contract, plots
from .aggregate import ResultsError
from .config import report_text
from .contract import METRICS, RUNTIME_SUMMARY, SUMMARY
from .stats import UNDECIDED, adjust_claims, check_claim, compare_published, mean_ci, metric_values

DASH = "\u2013"
#: third-party variant names (published.yaml ``third_party.{study}``) -> ours in ``{study}_ext``
THIRD_PARTY_ALIASES = {"bn_no_beta_gamma": "bn_no_affine", "bn_input_and_after": "bn_input"}
THIRD_PARTY_SOURCE = "third party, mean of 3 runs"


# --------------------------------------------------------------------------- formatting
def _missing(x) -> bool:
    """True for None and NaN."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(x, digits: int = 3, inf: str = "\u221e") -> str:
    """A number with ``digits`` decimals; NaN/None as a dash, +inf as ``inf`` (e.g. 'never')."""
    if _missing(x):
        return DASH
    x = float(x)
    if math.isinf(x):
        return inf if x > 0 else "\u2212\u221e"
    return f"{round(x, digits) + 0.0:.{digits}f}".replace("-", "\u2212")


def fmt_pm(mean, std, digits: int = 3) -> str:
    """'mean ± std' (std omitted when undefined)."""
    return fmt(mean, digits) if _missing(std) else f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def fmt_range(lo, hi, digits: int = 3) -> str:
    """'lo–hi'."""
    return f"{fmt(lo, digits)}{DASH}{fmt(hi, digits)}"


def fmt_time(seconds) -> str:
    """Seconds as a readable duration (µs, ms, s or min)."""
    if _missing(seconds):
        return DASH
    s = float(seconds)
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s" if s < 120 else f"{s / 60:.1f} min"


def fmt_p(p) -> str:
    """'p = 0.012' with 2 significant digits, 'p < 0.001' below that."""
    if _missing(p):
        return f"p = {DASH}"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def slug(text: str, prefix: str) -> str:
    """An HTML id from arbitrary text."""
    return prefix + "-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "x")


# --------------------------------------------------------------------------- reading
def _read_table(path: Path) -> pd.DataFrame:
    """An aggregate CSV, names kept as text; a missing file raises ResultsError."""
    if not path.is_file():
        raise ResultsError(f"{path}: aggregate file is missing (run the aggregate step first)")
    return pd.read_csv(path, dtype={"study": str, "variant": str}, keep_default_na=False, na_values=[""])


#: the aggregate tables (:data:`reglab.contract.AGGREGATES`) the report shows
SHOWN_TABLES = ("summary", "per_seed", "curves", "runtime")


def load_aggregates(results_dir: Path, study: str) -> dict[str, pd.DataFrame]:
    """The aggregate tables the report shows of one study, by name."""
    return {name: _read_table(Path(contract.aggregate_path(results_dir, study, name))) for name in SHOWN_TABLES}


#: the order of a study's CSV downloads (then any other aggregate of :data:`reglab.contract.AGGREGATES`)
DOWNLOAD_ORDER = ("summary", "per_seed", "finals", "runtime", "curves")
#: an aggregate CSV larger than this is not embedded in the page (its size and path are shown instead)
MAX_EMBEDDED_CSV_BYTES = 512 * 1024


def fmt_bytes(n: int) -> str:
    """A file size as '812 B', '3.4 KB' or '26.1 MB' (powers of 1024)."""
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.1f} MB"


def study_downloads(results_dir: Path, study: str, limit: int | None = None) -> list[dict]:
    """A study's aggregate CSVs as downloads, in :data:`DOWNLOAD_ORDER`; missing files are skipped.

    Each is ``{name, filename, size, path, href}``: ``filename`` the ``download`` name
    ``{study}_{name}.csv``, ``href`` the file's exact bytes as a ``data:text/csv;base64`` URI, or None
    when the file is larger than ``limit`` bytes (default :data:`MAX_EMBEDDED_CSV_BYTES`; the page
    then names its ``path``).
    """
    limit = MAX_EMBEDDED_CSV_BYTES if limit is None else limit
    names = [n for n in DOWNLOAD_ORDER if n in contract.AGGREGATES]
    names += [n for n in contract.AGGREGATES if n not in names]
    names.append(contract.VARIANCE)  # a study with a variance decomposition only
    out = []
    for name in names:
        path = Path(contract.aggregate_path(results_dir, study, name))
        if not path.is_file():
            continue
        size = path.stat().st_size
        href = None
        if size <= limit:
            href = "data:text/csv;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        out.append({"name": f"{name}.csv", "filename": f"{study}_{name}.csv", "size": fmt_bytes(size),
                    "path": str(path), "href": href})
    return out


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an npz file (no pickle)."""
    if not path.is_file():
        raise ResultsError(f"{path}: file is missing")
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def load_boundaries(results_dir: Path, study: str, variants) -> dict:
    """variant -> (grid_x, grid_y, mean prob, n seeds averaged, n diverged seeds); variants without data skipped.

    A variant's runs are those its study aggregates (:func:`reglab.contract.labelled_run_dirs`: a
    shared variant's may be another study's). A seed whose probabilities are all non-finite (its
    weights went NaN: a diverged seed) is left out of the mean and counted as diverged; the others
    are averaged with ``nanmean`` per grid point. When every seed diverged the mean is all NaN and n is 0.
    """
    out = {}
    for v, dirs in contract.labelled_run_dirs(results_dir, study, variants).items():
        probs, grid = [], None
        for d in dirs:
            if (d / contract.BOUNDARY).is_file():
                b = load_npz(d / contract.BOUNDARY)
                grid = grid or (b["grid_x"], b["grid_y"])
                if b["prob"].shape[1:] == (grid[1].size, grid[0].size):
                    probs.append(np.asarray(b["prob"], dtype=np.float64))
        if probs:
            p = np.concatenate(probs)
            p[~np.isfinite(p)] = np.nan
            ok = ~np.isnan(p).all(axis=(1, 2))
            with warnings.catch_warnings():  # a grid point NaN in every kept seed stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(p[ok], axis=0) if ok.any() else np.full(p.shape[1:], np.nan)
            out[v] = (grid[0], grid[1], mean, int(ok.sum()), int((~ok).sum()))
    return out


def load_metas(results_dir: Path, study: str, variants) -> list[dict]:
    """Every job's meta.json of a study (unreadable ones skipped), under the study's names.

    A run the study shares with another study or variant (the same training, trained once:
    :func:`reglab.contract.labelled_run_dirs`) is listed in every study that uses it, its variant
    named as that study names it and followed by where it was trained, e.g. ``overfit (shared: run
    of dropout/overfit)``.
    """
    metas = []
    for v, dirs in contract.labelled_run_dirs(results_dir, study, variants).items():
        for d in dirs:
            try:
                meta = json.loads((d / contract.META).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if not isinstance(meta, dict):
                continue
            trained = (str(meta.get("study", "")), str(meta.get("variant", "")))
            label = v if trained == (study, v) else f"{v} (shared: run of {trained[0]}/{trained[1]})"
            metas.append({**meta, "study": study, "variant": label})
    return metas


def load_published(path) -> dict | None:
    """The published-numbers YAML, or None when not configured or absent."""
    if not path or not Path(path).is_file():
        return None
    with open(path) as fh:
        data = yaml.safe_load(fh)
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- view models
def layer_text(layer: dict) -> str:
    """A layer spec as 'dense(units=50, activation=relu)'."""
    (kind, opts), = layer.items()
    args = ", ".join(f"{k}={v}" for k, v in (opts or {}).items())
    return f"{kind}({args})"


def _n_text(r) -> str:
    """The summary's n, with '(+k diverged)' when k > 0 of the variant's seeds diverged."""
    n = str(int(r["n"]))
    return n + (f" (+{int(r['diverged'])} diverged)" if int(r["diverged"]) > 0 else "")


def diverged_count(summary: pd.DataFrame) -> int:
    """Diverged seeds over all variants of a summary."""
    return int(summary["diverged"].sum())


def _metric_text(values: list, metric: str, stat: str, n: int) -> str:
    """One summary cell: a statistic's values in the metric's format (durations for seconds)."""
    m = METRICS[metric]
    one = fmt_time if m.unit == "s" else (lambda x: fmt(x, m.digits))
    if stat == "mean_std":
        return one(values[0]) if _missing(values[1]) else f"{one(values[0])} ± {one(values[1])}"
    if stat in ("ci", "boot_ci", "range"):
        return f"{one(values[0])}{DASH}{one(values[1])}"
    if stat == "iqm_ci":
        return one(values[0]) if _missing(values[1]) else f"{one(values[0])} ({one(values[1])}{DASH}{one(values[2])})"
    if stat == "never":
        return f"{int(values[0])} / {n}"
    return one(values[0])


def summary_table(summary: pd.DataFrame) -> dict:
    """Headers and formatted rows of the per-variant summary table: the columns that
    :data:`reglab.contract.SUMMARY` lists, then the job-level epoch times.

    "n" is the seeds the statistics are over; diverged seeds (excluded from every statistic) are
    shown as "9 (+1 diverged)".
    """
    headers = ["Variant", "n", *(c.header for c in SUMMARY), *RUNTIME_SUMMARY]
    rows = []
    for _, r in summary.iterrows():
        cells = [_metric_text([r[c] for c in col.columns], col.metric, col.stat, int(r["n"])) for col in SUMMARY]
        times = [f"{fmt_time(r[mean])} ± {fmt_time(r[std])}" for mean, std in RUNTIME_SUMMARY.values()]
        rows.append([r["variant"], _n_text(r), *cells, *times])
    return {"headers": headers, "rows": rows}


def published_table(df: pd.DataFrame, third_party: pd.DataFrame | None = None,
                    third_party_names: dict | None = None) -> dict:
    """Headers, rows and row classes of the published-vs-ours table (last cell: within range?).

    ``df`` and ``third_party`` are :func:`reglab.stats.compare_published` frames; third-party rows
    come last, marked with the class ``third-party`` and their source (``third_party_names`` maps
    our variant to the third party's name for it, when they differ).
    """
    headers = ["Variant", "Split", "Source", "Published", "Ours mean ± std", "Ours min\u2013max", "n",
               "Ours \u2212 published", "Published within our range"]
    rows, classes = [], []
    for frame, third in ((df, False), (third_party, True)):
        if frame is None:
            continue
        for _, r in frame.iterrows():
            source = "published, 1 run"
            if third:
                theirs = (third_party_names or {}).get(r["variant"], r["variant"])
                source = THIRD_PARTY_SOURCE + (f" (their {theirs})" if theirs != r["variant"] else "")
            rows.append([r["variant"], r["split"], source, fmt(r["published"]), fmt_pm(r["mean"], r["std"]),
                         fmt_range(r["min"], r["max"]), str(int(r["n"])), fmt(r["delta"]), bool(r["within_range"])])
            classes.append("third-party" if third else "")
    return {"headers": headers, "rows": rows, "row_classes": classes}


def third_party_note(third: dict, compared: pd.DataFrame | None) -> str:
    """The published table's note on its third-party rows ('' when there are none)."""
    if compared is None or not len(compared):
        return ""
    shown = set(compared["variant"])
    renamed = [f"their {e['name']} is our {v}" for v, e in third.items() if v in shown and e["name"] != v]
    return ("Rows with source \u201cthird party\u201d are someone else's runs of the seed's extensions "
            "(mean of 3 runs), shown for reference only" + (f"; {', '.join(renamed)}" if renamed else "") + ".")


def third_party_published(published: dict | None, study: str) -> dict[str, dict]:
    """Our variant -> {train, test} of published.yaml's ``third_party.{key}`` for study ``{key}_ext``.

    Third-party variant names are mapped to ours with :data:`THIRD_PARTY_ALIASES`; the third
    party's own name is kept under ``"name"``.
    """
    sections = (published or {}).get("third_party")
    if not isinstance(sections, dict):
        return {}
    for key, entries in sections.items():
        if f"{key}_ext" == study and isinstance(entries, dict):
            return {THIRD_PARTY_ALIASES.get(str(v), str(v)): {**e, "name": str(v)}
                    for v, e in entries.items() if isinstance(e, dict)}
    return {}


def _group_text(res: dict, suffix: str, name: str) -> str:
    """'variant: median …, mean ± std, n, never' for one side of a claim."""
    d = METRICS[res["metric"]].digits
    text = (f"{name}: median {fmt(res[f'median_{suffix}'], d, inf='never')}, "
            f"mean {fmt_pm(res[f'mean_{suffix}'], res[f'std_{suffix}'], d)}, n = {res[f'n_{suffix}']}")
    return text + (f", never {res[f'never_{suffix}']}" if res["metric"] == "epochs_to_80" else "")


CORRECTION_NAMES = {"holm": "Holm\u2013Bonferroni, family-wise error rate",
                    "bh": "Benjamini\u2013Hochberg, false discovery rate", "none": "no correction"}
VERDICTS = ("supported", "contradicted", "inconclusive", "equivalent", "not shown equivalent")


def _seeds_text(res: dict) -> str:
    """'needs about N seeds per variant …' for an undecided claim ('' for a decided or untested one)."""
    if res["verdict"] not in UNDECIDED or not res.get("test"):
        return ""
    per = " per variant" if res["compare_to"] else ""
    what = "show equivalence" if res.get("equivalence") is not None else "decide it"
    if res.get("seeds_needed") is None:
        effect = "observed shift (outside \u00b1equivalence)" if res.get("equivalence") is not None else "observed effect"
        return f"no number of seeds is expected to {what} at this {effect}"
    text = f"needs about {res['seeds_needed']} seeds{per} to {what} (80% power of a t-test at \u03b1 = {res['alpha']:g}"
    if res.get("seeds_needed_mw") is not None:
        text += f"; of the Mann\u2013Whitney test, resampling the observed seeds: {res['seeds_needed_mw']}"
    text += ")"
    have = min(res["n_a"], res["n_b"]) if res["compare_to"] else res["n_a"]
    if res["seeds_needed"] <= have:
        text += (f"; it already has {have}, so the rank test's resolution or the correction across claims "
                 "is what keeps it undecided")
    return text


def claim_view(res: dict) -> dict:
    """Formatted strings for one claim result from :func:`reglab.stats.check_claim` (or adjust_claims);
    a claim of several parts also gets each part's view (``parts``) and an overall test text."""
    if res.get("parts"):
        return _parts_claim_view(res)
    d = METRICS[res["metric"]].digits
    eq = res.get("equivalence")
    op = ">" if res["direction"] == "greater" else "<"
    if res["compare_to"]:
        shift = f"{res['variant']} \u2212 {res['compare_to']}"
        hyp = f"{res['metric']}: {shift} {op} {res['threshold']:g}"
        groups = [_group_text(res, "a", res["variant"]), _group_text(res, "b", res["compare_to"])]
    else:
        shift = f"{res['metric']} of {res['variant']}"
        hyp = f"{shift} {op} {res['threshold']:g}"
        groups = [_group_text(res, "a", res["variant"])]
    if eq is not None:
        centre = f"{shift}" if res["threshold"] == 0 else f"{shift} \u2212 {res['threshold']:g}"
        hyp = (f"{res['metric']}: " if res["compare_to"] else "") + f"|{centre}| < {eq:g}"
    correction = CORRECTION_NAMES.get(res.get("correction", "none"), res.get("correction", "none"))
    p_adj, p_opp_adj = res.get("p_value_adjusted", math.nan), res.get("p_value_opposite_adjusted", math.nan)
    test = effect = secondary = observed = ""
    if res.get("test"):
        if eq is not None:
            test = (f"{res['test']}: {fmt_p(res['p_value'])} (lower {fmt_p(res['p_lower'])}, upper "
                    f"{fmt_p(res['p_upper'])}), adjusted {fmt_p(p_adj)} ({correction}), \u03b1 = {res['alpha']:g}")
        else:
            test = (f"{res['test']}: statistic {fmt(res['statistic'], 2)}, {fmt_p(res['p_value'])}, adjusted "
                    f"{fmt_p(p_adj)} (opposite direction {fmt_p(res['p_value_opposite'])}, adjusted "
                    f"{fmt_p(p_opp_adj)}; {correction}), \u03b1 = {res['alpha']:g}")
        effect = f"{res['effect_size_name']} = {fmt(res['effect_size'], 2)}"
        if "hedges_g" in res:
            effect += f"; Hedges' g = {fmt(res['hedges_g'], 2)}"
        if not _missing(res.get("cles_low", math.nan)):
            effect += (f"; P({res['variant']} > {res['compare_to']}) = {fmt(res['cles'], 2)}, 95% bootstrap CI "
                       f"[{fmt(res['cles_low'], 2)}, {fmt(res['cles_high'], 2)}]")
        elif "cohens_d" in res:
            effect += f"; Cohen's d = {fmt(res['cohens_d'], 2)}"
        if res.get("secondary_test"):
            secondary = f"{res['secondary_test']}: t = {fmt(res['secondary_statistic'], 2)}, {fmt_p(res['secondary_p_value'])}"
        name = "difference of means" if res["compare_to"] else "mean"
        minus = f" \u2212 {res['threshold']:g}" if res["threshold"] else ""
        kind = "Welch " if res["compare_to"] else "t "
        observed = (f"{name}{minus} = {fmt(res.get('shift'), d)}, 95% {kind}CI "
                    f"[{fmt(res.get('shift_low'), d)}, {fmt(res.get('shift_high'), d)}]")
    return {**res, "anchor": slug(res["id"], "claim"), "hypothesis": hyp, "groups": groups,
            "test_text": test, "effect_text": effect, "secondary_text": secondary, "observed_text": observed,
            "seeds_text": _seeds_text(res), "correction_text": correction,
            "p_text": fmt_p(res["p_value"]), "p_opposite_text": fmt_p(res["p_value_opposite"]),
            "p_adjusted_text": fmt_p(p_adj), "p_opposite_adjusted_text": fmt_p(p_opp_adj),
            "verdict_class": res["verdict"].replace(" ", "-"), "effect_short": fmt(res["effect_size"], 2)}


def _parts_claim_view(res: dict) -> dict:
    """The view of a claim of several parts (see :func:`reglab.stats.check_claim`)."""
    parts = [claim_view({**part, "id": f"{res['id']}-part{i + 1}"}) for i, part in enumerate(res["parts"])]
    correction = CORRECTION_NAMES.get(res.get("correction", "none"), res.get("correction", "none"))
    p_adj, p_opp_adj = res.get("p_value_adjusted", math.nan), res.get("p_value_opposite_adjusted", math.nan)
    groups = list(dict.fromkeys(g for part in parts for g in part["groups"]))
    test = ""
    if res.get("test"):
        test = (f"all {len(parts)} parts (intersection-union): {fmt_p(res['p_value'])}, the largest part p, adjusted "
                f"{fmt_p(p_adj)}; any part against it (the smallest opposite p \u00d7 {len(parts)}): "
                f"{fmt_p(res['p_value_opposite'])}, adjusted {fmt_p(p_opp_adj)} ({correction}), \u03b1 = {res['alpha']:g}")
    return {**res, "anchor": slug(res["id"], "claim"), "parts": parts, "kind": f"{len(parts)} parts",
            "hypothesis": " and ".join(part["hypothesis"] for part in parts), "groups": groups,
            "test_text": test, "effect_text": "per part, below", "secondary_text": "", "observed_text": "",
            "seeds_text": _seeds_text({**res, "compare_to": any(p["compare_to"] for p in parts)}),
            "correction_text": correction, "p_text": fmt_p(res["p_value"]),
            "p_opposite_text": fmt_p(res["p_value_opposite"]), "p_adjusted_text": fmt_p(p_adj),
            "p_opposite_adjusted_text": fmt_p(p_opp_adj), "verdict_class": res["verdict"].replace(" ", "-"),
            "effect_size_name": None, "effect_short": ""}


def _value_view(value):
    """A provenance value as text, or a list of (key, text) for a mapping."""
    if isinstance(value, dict):
        return [(str(k), _value_view(v) if not isinstance(v, dict) else json.dumps(v)) for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def _source_hosts(sources) -> dict[str, str]:
    """Source name -> host name only (the report links to nothing outside itself)."""
    if not isinstance(sources, dict):
        return {}
    return {str(k): urlsplit(str(v)).netloc or str(v).split("/")[0] for k, v in sources.items()}


def jobs_table(metas: list[dict]) -> dict:
    """Per-job provenance: seeds, threads, accelerator, engine, times, versions, git, host."""
    vkeys = list(dict.fromkeys(k for m in metas for k in (m.get("versions") or {})))
    headers = ["Study", "Variant", "Chunk", "Seeds", "Threads", "Accelerator", "Engine", "Fit time", "Peak RSS",
               *vkeys, "Git", "Config hash", "Host", "CPU", "Started", "Finished"]
    rows = []
    for m in metas:
        git = m.get("git") or {}
        seeds = m.get("seeds") or []
        rows.append([
            m.get("study", ""), m.get("variant", ""), str(m.get("chunk", "")),
            f"{seeds[0]}\u2013{seeds[-1]} ({len(seeds)})" if seeds else "", str(m.get("threads", "")),
            str(m.get("accelerator", "")), str(m.get("engine", "")), fmt_time(m.get("fit_time_s")),
            f"{fmt(m.get('peak_rss_mb'), 0)} MB", *(str((m.get("versions") or {}).get(k, "")) for k in vkeys),
            f"{str(git.get('commit', ''))[:10]}{' (dirty)' if git.get('dirty') else ''}",
            str(m.get("config_hash", ""))[:12], str(m.get("hostname", "")), str(m.get("cpu", "")),
            str(m.get("started", "")), str(m.get("finished", "")),
        ])
    return {"headers": headers, "rows": rows}


def _variant_layers_training(study: dict, name: str) -> tuple[list, dict]:
    """A variant's layers and its training overrides."""
    return study["variants"][name], study["variant_training"].get(name, {})


def training_text(overrides: dict) -> str:
    """Training overrides as 'label_flip=0.1, gradient_noise(eta=0.01, gamma=0.55)'."""
    parts = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            parts.append(f"{key}({', '.join(f'{k}={v}' for k, v in value.items())})")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def _fmt_value(value) -> str:
    """A grid value as written ('0.005', '1', '0.5')."""
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def grid_variant_names(grid: dict) -> list[str]:
    """The grid's variant names in the order of its values (with axes: of their combinations)."""
    return list(grid["variants"])


def grid_axis_names(grid: dict) -> list[str]:
    """The names of a multi-axis grid's axes, in order ([] for the one-parameter form)."""
    return [axis["name"] for axis in grid.get("axes", [])]


def grid_point_values(grid: dict) -> list[dict]:
    """Each grid point's values by axis name, in the order of its variants (the validated ``points``;
    for the one-parameter form ``{param: value}``)."""
    if "axes" in grid:
        return [dict(p) for p in grid["points"]]
    return [{grid["param"]: v} for v in grid["values"]]


def _one_axis_grid(grid: dict) -> dict:
    """A multi-axis grid with one axis written as the one-parameter form (drawn as a curve)."""
    (axis,) = grid["axes"]
    out = {k: v for k, v in grid.items() if k not in ("axes", "points", "name")}
    return {**out, **{k: axis[k] for k in ("layer", "layers", "param", "values") if k in axis}}


def grid_points(per_seed: pd.DataFrame, grid: dict, metrics=plots.GRID_METRICS, level: float = 0.95) -> pd.DataFrame:
    """Tidy per-(variant, metric) mean and ``level`` t-interval over seeds for a grid and its baseline.

    Columns ``role`` ("grid" / "baseline"), ``variant``, ``value`` (NaN for the baseline),
    ``metric``, ``n``, ``mean``, ``ci_low``, ``ci_high``; a grid point without results has n = 0
    and NaN statistics. Grid rows keep the order of ``grid["values"]`` (duplicates dropped).
    A grid with ``axes`` has ``value`` NaN and one more column per axis, ``axis:{name}``: the
    point's value on it (NaN for the baseline); its rows keep the order of ``grid["variants"]``.
    """
    axes = grid_axis_names(grid)
    if axes:
        entries = [("grid", v, math.nan, point) for v, point in zip(grid_variant_names(grid), grid["points"])]
    else:
        entries = [("grid", v, float(x), {}) for v, x in dict(zip(grid_variant_names(grid), grid["values"])).items()]
    if grid.get("baseline"):
        entries.append(("baseline", grid["baseline"], math.nan, {}))
    rows = []
    for role, variant, value, point in entries:
        for metric in metrics:
            x = metric_values(per_seed, None, variant, metric) if metric in per_seed.columns else np.array([])
            x = x[np.isfinite(x)]
            mean, lo, hi = mean_ci(x, level)
            rows.append({"role": role, "variant": variant, "value": value, "metric": metric, "n": int(x.size),
                         "mean": mean, "ci_low": lo, "ci_high": hi,
                         **{f"axis:{a}": float(point.get(a, math.nan)) for a in axes}})
    return pd.DataFrame(rows, columns=["role", "variant", "value", "metric", "n", "mean", "ci_low", "ci_high",
                                       *(f"axis:{a}" for a in axes)])


def grid_marginals(per_seed: pd.DataFrame, grid: dict, metric: str = "final_test_acc",
                   level: float = 0.95) -> pd.DataFrame:
    """The marginal means of a multi-axis grid: per axis and value, each seed's ``metric`` averaged over
    the grid points with that value (the other axes' values), then the mean over seeds and its ``level``
    t-interval.

    A seed's diverged or missing points are left out of its average (a seed with none is left out).
    Columns ``axis``, ``value``, ``n`` (seeds), ``mean``, ``ci_low``, ``ci_high``; rows in axis order,
    values in the order the axis lists them.
    """
    rows = per_seed
    if "diverged_epoch" in rows.columns:
        rows = rows[pd.to_numeric(rows["diverged_epoch"], errors="coerce").fillna(0) == 0]
    rows = rows.assign(_x=pd.to_numeric(rows[metric], errors="coerce") if metric in rows.columns else np.nan)
    out = []
    for axis in grid["axes"]:
        for value in axis["values"]:
            cells = [v for v, p in zip(grid_variant_names(grid), grid["points"]) if p[axis["name"]] == value]
            sel = rows[rows["variant"].astype(str).isin(cells)]
            sel = sel[np.isfinite(sel["_x"].to_numpy(float))]
            per = sel.groupby("seed")["_x"].mean() if "seed" in sel.columns else sel["_x"]
            mean, lo, hi = mean_ci(per.to_numpy(float), level)
            out.append({"axis": axis["name"], "value": float(value), "n": int(per.size), "mean": mean,
                        "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(out, columns=["axis", "value", "n", "mean", "ci_low", "ci_high"])


def ci_overlap(a: tuple, b: tuple) -> bool | None:
    """Whether intervals ``a = (lo, hi)`` and ``b`` overlap; None when either is undefined."""
    if any(_missing(x) for x in (*a, *b)):
        return None
    return bool(a[0] <= b[1] and b[0] <= a[1])


def best_grid_point(points: pd.DataFrame, metric: str = "final_test_acc") -> dict | None:
    """The grid point with the highest mean ``metric`` (the first in value order on ties), or None.

    Returns {variant, value, n, mean, ci_low, ci_high, ties (other values with the same mean),
    baseline (its row as a dict, or None), overlap (CI overlap with the baseline's, None when
    undefined), side ("higher"/"lower" than the baseline when they do not overlap), point (a
    multi-axis grid's values by axis name, else None), tie_points (the other tied points' values)}.
    """
    rows = points[(points["role"] == "grid") & (points["metric"] == metric)]
    rows = rows[np.isfinite(rows["mean"].to_numpy(float))]
    if rows.empty:
        return None
    top = rows["mean"].max()
    tied = rows[np.isclose(rows["mean"].to_numpy(float), top, rtol=0, atol=1e-12)]
    best = tied.iloc[0].to_dict()
    base = points[(points["role"] == "baseline") & (points["metric"] == metric)]
    baseline = base.iloc[0].to_dict() if len(base) else None
    overlap = side = None
    if baseline is not None:
        overlap = ci_overlap((best["ci_low"], best["ci_high"]), (baseline["ci_low"], baseline["ci_high"]))
        if overlap is False:
            side = "higher" if best["mean"] > baseline["mean"] else "lower"
    axes = [c for c in points.columns if str(c).startswith("axis:")]
    point = {c.removeprefix("axis:"): best[c] for c in axes} or None
    tie_points = [{c.removeprefix("axis:"): r[c] for c in axes} for _, r in tied.iloc[1:].iterrows()] if axes else []
    return {**{k: best[k] for k in ("variant", "value", "n", "mean", "ci_low", "ci_high")},
            "ties": [v for v in tied["value"].iloc[1:]], "baseline": baseline, "overlap": overlap, "side": side,
            "point": point, "tie_points": tie_points}


def _grid_axis_label(study: dict, grid: dict, axis: dict | None = None) -> str:
    """'stddev (layer 0, gaussian_noise)', 'rate (layers 1, 3, dropout)' or 'training label_flip': the
    option the grid varies (one-parameter form) or one of its ``axes``."""
    axis = grid if axis is None else axis
    if "layer" not in axis and "layers" not in axis:
        return f"training {axis['param']}"
    indices = list(axis["layers"]) if "layers" in axis else [axis["layer"]]
    layers, _ = _variant_layers_training(study, grid["base"])
    kinds = dict.fromkeys(next(iter(layers[i]), "?") if i < len(layers) else "?" for i in indices)
    where = f"layer {indices[0]}" if len(indices) == 1 else f"layers {', '.join(map(str, indices))}"
    return f"{axis['param']} ({where}, {', '.join(kinds)})"


def _point_text(point: dict) -> str:
    """A grid point's values as 'input = 0.01, hidden = 0.05'."""
    return ", ".join(f"{k} = {_fmt_value(v)}" for k, v in point.items())


def _ci_text(mean, lo, hi, n) -> str:
    """'0.812 (95% CI 0.801–0.823, n = 10)'."""
    ci = f"95% CI {fmt_range(lo, hi)}, " if not _missing(lo) else ""
    return f"{fmt(mean)} ({ci}n = {n})"


def _baseline_comparison(best: dict, baseline: str | None, what: str) -> tuple[str, str]:
    """The best point against the baseline: (the sentences saying so, the table's overlap cell)."""
    b = best["baseline"]
    if b is None:
        return " No baseline is configured for this grid.", DASH
    text = f" Baseline ({baseline}): {_ci_text(b['mean'], b['ci_low'], b['ci_high'], b['n'])}."
    if best["overlap"] is None:
        return text + " Whether the intervals overlap cannot be judged (an interval is undefined).", "undefined"
    if best["overlap"]:
        return text + f" The intervals overlap: the best {what} is not clearly different from the baseline.", "yes"
    return (text + f" The intervals do not overlap: the best {what} is {best['side']} than the baseline.",
            f"no ({best['side']})")


def _grid_colors(grid: dict, colors: dict) -> tuple[str, str]:
    """(curve colour: the base variant's, band colour: the baseline's, made distinct from the curve's)."""
    base_color = colors.get(grid["base"], plots.OKABE_ITO[1])
    band_color = colors.get(grid.get("baseline"), plots.OKABE_ITO[0])
    if band_color == base_color:
        band_color = next(c for c in plots.OKABE_ITO if c != base_color)
    return base_color, band_color


def grid_view(i: int, name: str, study: dict, grid: dict, per_seed: pd.DataFrame, colors: dict) -> dict:
    """Everything the template shows for one grid: figure, best-value sentence and table.

    A grid with ``axes``: one axis is shown as the one-parameter form (a curve); several by
    :func:`axes_grid_view` (two: a heatmap and marginal curves; more: a table only).
    """
    if "axes" in grid:
        if len(grid["axes"]) == 1:
            return grid_view(i, name, study, _one_axis_grid(grid), per_seed, colors)
        return axes_grid_view(i, name, study, grid, per_seed, colors)
    points = grid_points(per_seed, grid)
    best = best_grid_point(points)
    param = grid["param"].split(".")[-1]
    title = grid.get("title") or grid["id"]
    baseline = grid.get("baseline")
    xlabel = _grid_axis_label(study, grid)
    base_color, band_color = _grid_colors(grid, colors)
    fig = plots.fig_grid(points, xlabel, color=base_color, baseline_color=band_color,
                         best=None if best is None else best["value"])
    scale, linthresh = plots.grid_xscale(grid["values"])
    values = ", ".join(_fmt_value(v) for v in grid["values"])
    caption = (f"Mean final (left) and peak (right) test accuracy over seeds with 95% t-intervals, for each "
               f"{param} of the grid; base variant {grid['base']}")
    caption += f"; band: 95% CI of the baseline ({baseline}), dashed line: its mean" if baseline else ""
    caption += "; ring: best value" if best else ""
    caption += (f". Symmetric-log x axis (linear below {linthresh:g})." if scale == "symlog" else ".")
    alt = (f"Grid {title} of study {name}: mean final and peak test accuracy with 95% confidence intervals "
           f"against {param} ({values})")
    alt += f", with the baseline ({baseline}) as a horizontal band." if baseline else "."
    headers = ["Point", "Variant", param, "n", "Final test acc", "95% CI", "Peak test acc", "95% CI (peak)",
               "CI overlaps baseline"]
    rows, sentence = [], "No grid point has results yet."

    def row(label, variant, value, overlap_text):
        r = {m: points[(points["variant"] == variant) & (points["metric"] == m)].iloc[0] for m in plots.GRID_METRICS}
        f, p = r["final_test_acc"], r["peak_test_acc"]
        return [label, variant, value, str(int(f["n"])), fmt(f["mean"]), fmt_range(f["ci_low"], f["ci_high"]),
                fmt(p["mean"]), fmt_range(p["ci_low"], p["ci_high"]), overlap_text]

    if best is not None:
        ties = f"; tied with {', '.join(_fmt_value(v) for v in best['ties'])}" if best["ties"] else ""
        sentence = (f"Best {param}: {_fmt_value(best['value'])} (variant {best['variant']}{ties}), mean final test "
                    f"accuracy {_ci_text(best['mean'], best['ci_low'], best['ci_high'], best['n'])}.")
        b = best["baseline"]
        more, overlap_text = _baseline_comparison(best, baseline, "value")
        sentence += more
        rows.append(row("Best value", best["variant"], _fmt_value(best["value"]), overlap_text))
        if b is not None:
            rows.append(row("Baseline", baseline, DASH, DASH))
    return {
        "id": slug(f"{i}-{name}-{grid['id']}", "grid"), "grid_id": grid["id"], "title": title, "param": param,
        "base": grid["base"], "baseline": baseline, "values_text": values, "best": best, "sentence": sentence,
        "figure": {"src": plots.fig_to_data_uri(fig), "alt": alt, "caption": caption},
        "table": {"headers": headers, "rows": rows},
    }


def _overlap_cell(r, b) -> str:
    """Whether a grid point's final-test-accuracy interval overlaps the baseline's ``b`` (a row, or None)."""
    if b is None:
        return DASH
    overlap = ci_overlap((r["ci_low"], r["ci_high"]), (b["ci_low"], b["ci_high"]))
    if overlap is None:
        return "undefined"
    return "yes" if overlap else f"no ({'higher' if r['mean'] > b['mean'] else 'lower'})"


def axes_grid_view(i: int, name: str, study: dict, grid: dict, per_seed: pd.DataFrame, colors: dict) -> dict:
    """The view of a grid over several axes: with two axes a heatmap of the mean final test accuracy
    (:func:`reglab.plots.fig_grid_heatmap`: rows the first axis, columns the second) and the marginal
    curves (:func:`grid_marginals`, :func:`reglab.plots.fig_grid_marginals`); with three or more no
    figure. Always the best point's sentence and a table of every point (n, mean, 95% CI, overlap
    with the baseline's interval) with the best point and the baseline marked.
    """
    metric = "final_test_acc"
    points = grid_points(per_seed, grid, metrics=(metric,))
    best = best_grid_point(points, metric)
    title = grid.get("title") or grid["id"]
    baseline = grid.get("baseline")
    axes = grid["axes"]
    names = [a["name"] for a in axes]
    labels = {a["name"]: _grid_axis_label(study, grid, a) for a in axes}
    full = {n: f"{n}: {label}" for n, label in labels.items()}
    base_color, band_color = _grid_colors(grid, colors)
    cells = points[points["role"] == "grid"].rename(columns={f"axis:{n}": n for n in names})
    base_rows = points[points["role"] == "baseline"]
    b = base_rows.iloc[0] if len(base_rows) else None
    figures, note = [], ""
    if len(axes) == 2:
        first, second = names
        best_cell = None if best is None else (best["point"][second], best["point"][first])
        heat = plots.fig_grid_heatmap(cells, second, first, full[second], full[first], best=best_cell,
                                      baseline=None if b is None else float(b["mean"]))
        alt = (f"Heatmap of grid {title} of study {name}: mean final test accuracy over seeds for every "
               f"combination of {first} ({labels[first]}; rows) and {second} ({labels[second]}; columns)")
        alt += (f"; the best point, {_point_text(best['point'])}, is boxed" if best else "") + "."
        caption = (f"Mean final test accuracy over seeds of each grid point (colour and number; a dash: no results "
                   f"yet); rows: {first}, columns: {second}; base variant {grid['base']}")
        caption += "; box: the best point" if best else ""
        caption += (f"; dashed line on the colour bar: the mean of the baseline ({baseline})"
                    if b is not None and not _missing(b["mean"]) else "") + "."
        figures.append({"kind": "heatmap", "src": plots.fig_to_data_uri(heat), "alt": alt, "caption": caption})
        marginals = plots.fig_grid_marginals(grid_marginals(per_seed, grid, metric), labels, color=base_color,
                                             baseline=b, baseline_color=band_color)
        alt = (f"Marginal curves of grid {title} of study {name}: mean final test accuracy with 95% confidence "
               f"intervals against {first} and against {second}, each averaged over the other axis")
        alt += f", with the baseline ({baseline}) as a horizontal band." if baseline else "."
        caption = ("Marginal means: for each value of one axis, each seed's final test accuracy averaged over the "
                   "other axis's values, then the mean over seeds with its 95% t-interval")
        caption += f"; band: 95% CI of the baseline ({baseline}), dashed line: its mean." if baseline else "."
        figures.append({"kind": "marginals", "src": plots.fig_to_data_uri(marginals), "alt": alt, "caption": caption})
    else:
        note = f"A grid over {len(axes)} axes is shown as a table of its points (no figure)."
    sentence = "No grid point has results yet."
    if best is not None:
        ties = (", tied with " + ", ".join(f"({_point_text(p)})" for p in best["tie_points"])
                if best["tie_points"] else "")
        sentence = (f"Best point: {_point_text(best['point'])} (variant {best['variant']}{ties}), mean final test "
                    f"accuracy {_ci_text(best['mean'], best['ci_low'], best['ci_high'], best['n'])}.")
        sentence += _baseline_comparison(best, baseline, "point")[0]
    headers = ["Variant", *names, "n", "Final test acc", "95% CI", "CI overlaps baseline", "Mark"]
    rows, classes = [], []
    for _, r in cells.iterrows():
        is_best = best is not None and r["variant"] == best["variant"]
        rows.append([r["variant"], *(_fmt_value(r[n]) for n in names), str(int(r["n"])), fmt(r["mean"]),
                     fmt_range(r["ci_low"], r["ci_high"]), _overlap_cell(r, b), "best" if is_best else ""])
        classes.append("grid-best-cell" if is_best else "")
    if b is not None:
        rows.append([baseline, *(DASH for _ in names), str(int(b["n"])), fmt(b["mean"]),
                     fmt_range(b["ci_low"], b["ci_high"]), DASH, "baseline"])
        classes.append("grid-baseline")
    return {
        "id": slug(f"{i}-{name}-{grid['id']}", "grid"), "grid_id": grid["id"], "title": title, "kind": "axes",
        "param": ", ".join(names), "base": grid["base"], "baseline": baseline, "best": best, "sentence": sentence,
        "axes": [{"name": a["name"], "label": labels[a["name"]],
                  "values_text": ", ".join(_fmt_value(v) for v in a["values"])} for a in axes],
        "figures": figures, "note": note,
        "table": {"headers": headers, "rows": rows, "row_classes": classes},
    }


def variants_view(study: dict, order: list) -> list[dict]:
    """The study's variants: name, layers as text, training overrides as text, and the grids it is a point of."""
    in_grids = {}
    for grid in study["grids"]:
        for v, point in zip(grid_variant_names(grid), grid_point_values(grid)):
            in_grids.setdefault(v, []).append(f"{grid['id']}: {_point_text(point)}")
    out = []
    for v in order:
        layers, training = _variant_layers_training(study, v)
        out.append({"name": v, "layers": " \u2192 ".join(layer_text(layer) for layer in layers),
                    "training": training_text(training), "grids": in_grids.get(v, [])})
    return out


def grid_only_variants(study: dict) -> set[str]:
    """The variants of a study that exist only as grid points (see :func:`figure_variants` for the rule)."""
    grids = study["grids"]
    kept = {g.get(k) for g in grids for k in ("base", "baseline")}
    return {v for g in grids for v in grid_variant_names(g) if v not in kept}


def figure_variants(study: dict) -> list[str]:
    """The variants the per-study figures show, in study order: the explicit ones plus each grid's baseline.

    Grid points are drawn by their grid's figure instead. The validated config keeps no record of
    which variants the user wrote (grid points are merged into ``study["variants"]``), so the rule
    is: a variant is *grid-only* when it is one of some grid's ``variants`` and is neither the
    ``base`` nor the ``baseline`` of any grid; every other variant is *explicit*. A grid point the
    user also wrote explicitly counts as explicit when it is the grid's base (``dropout_0.4`` in
    ``dropout_ext``). Limitation: an explicitly written variant that coincides with a grid point
    other than the base cannot be told apart and is treated as grid-only. A variance decomposition's
    runs (``variance_runs``) are drawn nowhere: the "Sources of variance" table shows them.
    """
    grid_only = grid_only_variants(study) | set(study.get("variance_runs", {}))
    out = [v for v in study["variants"] if v not in grid_only]
    out += [g["baseline"] for g in study["grids"] if g.get("baseline") and g["baseline"] not in out]
    return out


def _classes_text(data: dict) -> str:
    """'2 classes' / '10 classes' over train and test."""
    k = len(plots.class_labels(data["y_train"], data["y_test"]))
    return f"{k} class" + ("" if k == 1 else "es")


def dataset_figure_text(dataset: str, data: dict) -> tuple[str, str, str]:
    """(kind, alt, caption) of the dataset figure, by :func:`reglab.plots.dataset_kind`."""
    kind = plots.dataset_kind(data)
    x = np.asarray(data["x_train"])
    n_train, n_test, classes = len(data["y_train"]), len(data["y_test"]), _classes_text(data)
    if kind == "images":
        h, w = x.shape[-2:]
        channels = f", {x.shape[1]} channels" if x.shape[1] != 1 else ""
        alt = (f"Example training images of the {dataset} dataset ({h}×{w}{channels}, {classes}) with their "
               f"labels, and the number of train and test examples per class.")
        caption = (f"{dataset}: {n_train} training images ({h}x{w}{channels}), {n_test} test; {classes}. Top: "
                   f"training examples, each titled with its class; bottom: examples per class in train and test.")
    elif kind == "sequences":
        features = f", {x.shape[2]} features (the first is drawn)" if x.shape[2] != 1 else ""
        alt = (f"A few training sequences per class of the {dataset} dataset overlaid, one colour per class "
               f"({classes}), and the number of train and test examples per class.")
        caption = (f"{dataset}: {n_train} training sequences (length {x.shape[1]}{features}), {n_test} test; "
                   f"{classes}. Left: a few training sequences per class, one colour per class; right: examples "
                   f"per class in train and test.")
    elif kind == "points":
        alt = f"Scatter plot of the {dataset} dataset: train and test points of {classes}."
        caption = f"Dataset {dataset}: {n_train} train points (left), {n_test} test points (right)."
    else:
        alt = f"Number of train and test examples per class of the {dataset} dataset ({classes})."
        caption = (f"{dataset}: {n_train} training examples (shape {' x '.join(map(str, x.shape[1:]))}), "
                   f"{n_test} test; {classes}. Examples per class in train and test.")
    return kind, alt, caption


def study_figures(name: str, study: dict, agg: dict, data: dict, boundaries: dict, variants: list,
                  colors: dict | None = None, n_grid_only: int = 0) -> list[dict]:
    """The study's figures as {kind, src, alt, caption}; ``variants`` are those drawn (see :func:`figure_variants`).

    ``kind`` is ``dataset-{points,images,sequences,other}``, ``curves``, ``small-multiples``,
    ``final`` or ``boundaries``; the decision-boundary figure is left out when no variant has
    boundary data (``boundaries`` empty: training writes none unless the data are 2-D and binary).
    """
    colors = colors or plots.variant_colors(variants)
    names, n = ", ".join(variants), int(agg["summary"]["n"].max())
    more = (f" The {n_grid_only} other grid points are shown in the grid figures below and the summary table."
            if n_grid_only else "")
    diverged = (" Diverged seeds (training loss no longer finite) do not count in the means; epochs without "
                "any value are not drawn." if diverged_count(agg["summary"]) else "")
    diverged_b = (" Diverged seeds are left out of the mean; panel titles count them."
                  if diverged_count(agg["summary"]) else "")
    kind, data_alt, data_caption = dataset_figure_text(study["dataset"], data)
    figs = [
        (f"dataset-{kind}", plots.fig_dataset(data), data_alt, data_caption),
        ("curves", plots.fig_learning_curves(agg["curves"], variants, colors),
         f"Learning curves of {name}: train and test accuracy and loss per epoch, mean ± std over seeds, for {names}.",
         f"Learning curves: mean ± 1 std over up to {n} seeds per variant (Keras-history train metrics, "
         f"inference-mode test metrics).{diverged}{more}"),
        ("small-multiples", plots.fig_small_multiples(agg["curves"], variants, colors),
         f"Small multiples of {name}: one panel per variant ({names}) with train and test accuracy.",
         f"One panel per variant: train (dashed) and test (solid) accuracy, mean ± 1 std; dotted line at 80%.{more}"),
        ("final", plots.fig_final_distribution(agg["per_seed"], variants, colors),
         f"Box plots of final train and test accuracy of {name} per variant ({names}), with every seed as a point.",
         f"Final accuracy after training: box (quartiles, median) plus every seed as a jittered point.{more}"),
    ]
    if boundaries:
        figs.append(
            ("boundaries", plots.fig_decision_boundaries(boundaries, data, variants),
             f"Decision boundaries of {name}: mean predicted probability of class 1 over seeds per variant "
             f"({names}), with the data.",
             f"Mean predicted probability of class 1 over seeds (black line: 0.5); filled points train, hollow "
             f"points test.{diverged_b}{more}"))
    return [{"kind": k, "src": plots.fig_to_data_uri(f), "alt": alt, "caption": cap} for k, f, alt, cap in figs]


def boundary_note(data: dict, boundaries: dict) -> str:
    """Why a study has no decision-boundary figure, when a reader would expect one ('' otherwise).

    Only 2-D binary data have a boundary to draw; for them a missing figure means no run wrote
    ``boundary.npz`` (yet). Images, sequences and multi-class data never have one: nothing is said.
    """
    binary = len(plots.class_labels(data["y_train"], data["y_test"])) <= 2
    if boundaries or plots.dataset_kind(data) != "points" or not binary:
        return ""
    return "No decision-boundary data (boundary.npz) was found for the runs of this study."


def sequential_decisions(config: dict, results_dir: Path) -> dict[str, list[dict]]:
    """study -> the decisions of every look of each sequentially seeded study (:mod:`reglab.looks`)."""
    from .looks import read_traces

    out = {}
    for study in config["studies"]:
        decisions = read_traces(results_dir, study)
        if decisions:
            out[study] = decisions
    return out


def sequential_verdicts(results: list[dict], correction: str, decisions: dict[str, list[dict]]) -> list[dict]:
    """Claims with their verdicts: a sequentially seeded study's claims from their group-sequential
    test (at alpha / m, m the report's claims: :func:`reglab.looks.sequential_alpha`), the others
    from ``correction`` across themselves at their share of alpha (their adjusted p times m / their
    number; the sequential claims and they together keep the family-wise error rate, Bonferroni)."""
    fixed = [r for r in results if r["study"] not in decisions]
    scale = len(results) / len(fixed) if fixed else 1.0
    adjusted = iter(adjust_claims(fixed, correction, scale=scale))
    out = []
    for r in results:
        if r["study"] not in decisions:
            out.append(next(adjusted))
            continue
        trace = decisions[r["study"]][-1]["claims"].get(r["id"])
        r = {**r, "correction": "group-sequential", "p_value_adjusted": math.nan,
             "p_value_opposite_adjusted": math.nan}
        if trace is not None:
            r.update(verdict="inconclusive" if trace["decision"] == "continue" else trace["decision"],
                     sequential=sequential_view(trace))
        out.append(r)
    return out


def sequential_view(trace: dict) -> dict:
    """A claim's group-sequential test (:class:`reglab.sequential.BoundaryTrace` dict) as text and rows."""
    looks = trace["looks"]
    if trace.get("stopped_at"):
        k = trace["stopped_at"]
        text = f"{trace['decision']}: stopped at look {k} ({looks[k - 1]} seeds per variant)"
    else:
        reached = [n for n, d in zip(looks, trace["decisions"]) if d is not None]
        text = (f"no boundary crossed in {len(reached)} of {len(looks)} looks "
                f"({reached[-1] if reached else 0} seeds per variant)")
    text += (f"; Lan\u2013DeMets O'Brien\u2013Fleming boundaries at \u03b1 = {trace['alpha']:.4g} "
             f"(the claim's \u03b1 over the report's claims)")
    rows = [[str(k + 1), str(n), fmt(up, 2), fmt(z, 2) if z is not None else "\u2013", d or "not reached"]
            for k, (n, up, z, d) in enumerate(zip(looks, trace["upper"], trace["z"], trace["decisions"]))]
    return {"text": text, "headers": ["Look", "Seeds per variant", "Boundary z", "Observed z", "Decision"],
            "rows": rows}


#: what each row of the "Sources of variance" table varies (variance.csv's ``source``)
VARIANCE_SOURCES = {
    "seeds": "ordinary seeds: init + order + draws (the dataset's split)",
    "init": "initial weights only",
    "order": "data order only (per-epoch shuffles)",
    "draws": "training-time draws only (dropout, noise, label flips)",
    "split": "train/test split only",
    "all": "all sources, the split too",
}


def variance_view(results_dir: Path, study: str) -> dict | None:
    """The "Sources of variance of final test accuracy" table from the study's variance.csv (None
    when the study decomposes no variance): per variant and source, n, the std over seeds and its
    chi-square 95% CI, the mean."""
    path = Path(contract.aggregate_path(results_dir, study, contract.VARIANCE))
    if not path.is_file():
        return None
    df = _read_table(path)
    rows = [[r["variant"], VARIANCE_SOURCES.get(r["source"], r["source"]), fmt(r["n"], 0), fmt(r["std"], 4),
             fmt_range(r["std_ci_low"], r["std_ci_high"], 4), fmt(r["mean"])] for _, r in df.iterrows()]
    classes = ["variance-seeds" if r == "seeds" else "" for r in df["source"]]
    return {"headers": ["Variant", "What varies", "n", "Std of final test acc", "Std 95% CI",
                        "Mean final test acc"], "rows": rows, "row_classes": classes}


def study_view(i: int, name: str, study: dict, agg: dict, results_dir: Path, published: dict | None,
               claims: list) -> dict:
    """Everything the template shows for one study (``agg``: its :func:`load_aggregates`)."""
    order = [v for v in study["variants"] if v in set(agg["summary"]["variant"])]
    order += [v for v in agg["summary"]["variant"] if v not in order]
    agg["summary"] = agg["summary"].set_index("variant").loc[order].reset_index()
    decomposition = [v for v in order if v in study.get("variance_runs", {})]  # in the variance table only
    order = [v for v in order if v not in decomposition]
    agg["summary"] = agg["summary"][agg["summary"]["variant"].isin(order)].reset_index(drop=True)
    grid_only = grid_only_variants(study)
    shown = [v for v in figure_variants(study) if v in order]
    shown += [v for v in order if v not in shown and v not in grid_only]  # results of variants not in the config
    points = [v for v in order if v not in shown]
    colors = plots.variant_colors(shown + points)  # the drawn variants get the distinct colours first
    data = load_npz(Path(contract.dataset_path(results_dir, study["dataset"])))
    boundaries = load_boundaries(results_dir, name, shown)
    pub = compare_published(published, agg["summary"], agg["per_seed"]) if published else None
    third = third_party_published(published, name)
    tp = compare_published({"studies": {name: third}}, agg["summary"], agg["per_seed"]) if third else None
    training = study["training"]
    summary = agg["summary"]
    return {
        "name": name, "id": slug(f"{i}-{name}", "study"), "title": study["title"],
        "dataset": study["dataset"], "training": training,
        "seeds": (f"{study['seeds']['start']} to {study['seeds']['max']} (sequential, +{study['seeds']['step']} "
                  "per look for undecided claims)" if isinstance(study["seeds"], dict) else study["seeds"]),
        "optimizer": ", ".join(f"{k}={v}" for k, v in training["optimizer"].items()),
        "variants": variants_view(study, order),
        "figures": study_figures(name, study, agg, data, boundaries, shown, colors, len(points)),
        "figure_note": boundary_note(data, boundaries),
        "grids": [grid_view(i, name, study, g, agg["per_seed"], colors) for g in study["grids"]],
        "summary": summary_table(summary[summary["variant"].isin(shown)]),
        "summary_grid": summary_table(summary[summary["variant"].isin(points)]) if points else None,
        "diverged": diverged_count(summary),
        "published": (published_table(pub, tp, {v: e["name"] for v, e in third.items()})
                      if (pub is not None and len(pub)) or (tp is not None and len(tp)) else None),
        "third_party_note": third_party_note(third, tp),
        "claims": [c for c in claims if c["study"] == name],
        "metas": load_metas(results_dir, name, order + decomposition),
        "downloads": study_downloads(results_dir, name),
        "variance": variance_view(results_dir, name),
    }


def study_views(config: dict, aggs: dict, results_dir: Path, published: dict | None, claims: list,
                workers: int = 1) -> list[dict]:
    """Every study's :func:`study_view`, in config order; with ``workers`` > 1 rendered by that many
    processes (a study's figures take seconds to draw; each study's view is the same either way)."""
    args = [(i, name, study, aggs[name], results_dir, published, claims)
            for i, (name, study) in enumerate(config["studies"].items())]
    if workers <= 1 or len(args) <= 1:
        return [study_view(*a) for a in args]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(args))) as pool:
        return list(pool.map(study_view, *zip(*args)))


def render_report(config: dict, results_dir: Path, out_html: Path, provenance: dict | None = None,
                  workers: int = 1) -> None:
    """Render the whole report to ``out_html`` (atomically), the studies by ``workers`` processes."""
    results_dir, out_html = Path(results_dir), Path(out_html)
    published_path = config["published"]
    published = load_published(published_path)
    aggs = {name: load_aggregates(results_dir, name) for name in config["studies"]}
    correction = config.get("claims_correction", "holm")
    checked = [check_claim(claim, aggs[claim["study"]]["per_seed"]) for claim in config["claims"]]
    claims = [claim_view(c) for c in sequential_verdicts(checked, correction, sequential_decisions(config, results_dir))]
    studies = study_views(config, aggs, results_dir, published, claims, workers)
    env = Environment(loader=PackageLoader("reglab"), autoescape=select_autoescape(default=True))
    html = env.get_template("report.html.j2").render(
        **report_text(config),  # title and intro: config's report keys, else the schema's defaults
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        studies=studies, claims=claims,
        verdict_counts={v: sum(c["verdict"] == v for c in claims) for v in VERDICTS},
        correction=CORRECTION_NAMES[correction], correction_key=correction,
        published_path=str(published_path or ""), published_available=published is not None,
        published_sources=_source_hosts((published or {}).get("sources")),
        provenance=[(str(k), _value_view(v)) for k, v in (provenance or {}).items()],
        jobs=jobs_table([m for s in studies for m in s["metas"]]),
    )
    contract.write_text(html, out_html)
