"""Render the self-contained HTML report from the aggregates (Jinja2, autoescaped).

``render_report(config, results_dir, out_html, provenance)`` reads
``results_dir/aggregate/{study}/{summary,per_seed,curves,runtime}.csv``,
``results_dir/datasets/{dataset}.npz``, ``results_dir/runs/{study}/{variant}/chunk*/``
(``boundary.npz``, ``meta.json``), the published YAML named by ``config["published"]`` (relative
to the CWD; its section is skipped when absent) and checks ``config["claims"]``. Figures are
inlined as PNG ``data:`` URIs and the CSS is inlined, so the page loads nothing from outside.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import yaml
from jinja2 import Environment, PackageLoader, select_autoescape

from . import plots
from .aggregate import ResultsError
from .stats import check_claim, compare_published

AGGREGATES = ("summary", "per_seed", "curves", "runtime")
DASH = "\u2013"


# --------------------------------------------------------------------------- formatting
def _missing(x) -> bool:
    """True for None and NaN."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(x, digits: int = 3) -> str:
    """A number with ``digits`` decimals; NaN/None as a dash, inf as 'never'."""
    if _missing(x):
        return DASH
    x = float(x)
    if math.isinf(x):
        return "never" if x > 0 else "-inf"
    return f"{x:.{digits}f}".replace("-", "\u2212")


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
    """A p-value with 2 significant digits, '< 0.001' below that."""
    if _missing(p):
        return DASH
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def slug(text: str, prefix: str) -> str:
    """An HTML id from arbitrary text."""
    return prefix + "-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "x")


# --------------------------------------------------------------------------- reading
def _read_table(path: Path) -> pd.DataFrame:
    """An aggregate CSV, names kept as text; a missing file raises ResultsError."""
    if not path.is_file():
        raise ResultsError(f"{path}: aggregate file is missing (run the aggregate step first)")
    return pd.read_csv(path, dtype={"study": str, "variant": str}, keep_default_na=False, na_values=[""])


def load_aggregates(agg_dir: Path) -> dict[str, pd.DataFrame]:
    """summary, per_seed, curves and runtime tables of one study."""
    return {name: _read_table(agg_dir / f"{name}.csv") for name in AGGREGATES}


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an npz file (no pickle)."""
    if not path.is_file():
        raise ResultsError(f"{path}: file is missing")
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _chunk_dirs(variant_dir: Path) -> list[Path]:
    """chunk* directories in numeric order."""
    dirs = [d for d in variant_dir.glob("chunk*") if d.is_dir()]
    return sorted(dirs, key=lambda d: int(re.sub(r"\D", "", d.name) or 0))


def load_boundaries(runs_dir: Path, variants) -> dict:
    """variant -> (grid_x, grid_y, mean prob over all seeds, n seeds); variants without data skipped."""
    out = {}
    for v in variants:
        probs, grid = [], None
        for d in _chunk_dirs(runs_dir / v):
            if (d / "boundary.npz").is_file():
                b = load_npz(d / "boundary.npz")
                grid = grid or (b["grid_x"], b["grid_y"])
                if b["prob"].shape[1:] == (grid[1].size, grid[0].size):
                    probs.append(np.asarray(b["prob"], dtype=np.float64))
        if probs:
            p = np.concatenate(probs)
            out[v] = (grid[0], grid[1], p.mean(axis=0), p.shape[0])
    return out


def load_metas(runs_dir: Path, variants) -> list[dict]:
    """Every job's meta.json of a study (unreadable ones skipped)."""
    metas = []
    for v in variants:
        for d in _chunk_dirs(runs_dir / v):
            try:
                metas.append(json.loads((d / "meta.json").read_text()))
            except (OSError, json.JSONDecodeError):
                continue
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


def summary_table(summary: pd.DataFrame) -> dict:
    """Headers and formatted rows of the per-variant summary table."""
    headers = ["Variant", "n", "Final train acc", "Final test acc", "Test acc 95% CI", "Test min\u2013max",
               "Train min\u2013max", "Gap (train\u2212test)", "Epochs to 80%", "Never 80%", "Peak test acc",
               "Peak epoch", "Fit time / seed", "Epoch time (job)", "Epoch time / replica", "Time to 80%"]
    rows = []
    for _, r in summary.iterrows():
        rows.append([
            r["variant"], str(int(r["n"])),
            fmt_pm(r["final_train_acc_mean"], r["final_train_acc_std"]),
            fmt_pm(r["final_test_acc_mean"], r["final_test_acc_std"]),
            fmt_range(r["final_test_acc_ci_low"], r["final_test_acc_ci_high"]),
            fmt_range(r["final_test_acc_min"], r["final_test_acc_max"]),
            fmt_range(r["final_train_acc_min"], r["final_train_acc_max"]),
            fmt_pm(r["gap_mean"], r["gap_std"]),
            fmt_pm(r["epochs_to_80_mean"], r["epochs_to_80_std"], 1),
            f"{int(r['never_80'])} / {int(r['n'])}",
            fmt_pm(r["peak_test_acc_mean"], r["peak_test_acc_std"]),
            fmt(r["peak_epoch_mean"], 0),
            fmt_time(r["fit_time_per_seed_s"]),
            f"{fmt_time(r['epoch_time_job_mean_s'])} ± {fmt_time(r['epoch_time_job_std_s'])}",
            f"{fmt_time(r['epoch_time_replica_mean_s'])} ± {fmt_time(r['epoch_time_replica_std_s'])}",
            fmt_time(r["time_to_80_mean_s"]),
        ])
    return {"headers": headers, "rows": rows}


def published_table(df: pd.DataFrame) -> dict:
    """Headers and rows of the published-vs-ours table (last cell: within range?)."""
    headers = ["Variant", "Split", "Published (1 run)", "Ours mean ± std", "Ours min\u2013max", "n",
               "Ours \u2212 published", "Published within our range"]
    rows = [[r["variant"], r["split"], fmt(r["published"]), fmt_pm(r["mean"], r["std"]),
             fmt_range(r["min"], r["max"]), str(int(r["n"])), fmt(r["delta"]), bool(r["within_range"])]
            for _, r in df.iterrows()]
    return {"headers": headers, "rows": rows}


def _group_text(res: dict, suffix: str, name: str) -> str:
    """'variant: median …, mean ± std, n, never' for one side of a claim."""
    text = (f"{name}: median {fmt(res[f'median_{suffix}'])}, mean {fmt_pm(res[f'mean_{suffix}'], res[f'std_{suffix}'])}, "
            f"n = {res[f'n_{suffix}']}")
    return text + (f", never {res[f'never_{suffix}']}" if res["metric"] == "epochs_to_80" else "")


def claim_view(res: dict) -> dict:
    """Formatted strings for one claim result from :func:`reglab.stats.check_claim`."""
    op = ">" if res["direction"] == "greater" else "<"
    if res["compare_to"]:
        hyp = f"{res['metric']}: {res['variant']} \u2212 {res['compare_to']} {op} {res['threshold']:g}"
        groups = [_group_text(res, "a", res["variant"]), _group_text(res, "b", res["compare_to"])]
    else:
        hyp = f"{res['metric']} of {res['variant']} {op} {res['threshold']:g}"
        groups = [_group_text(res, "a", res["variant"])]
    test = effect = secondary = ""
    if res.get("test"):
        test = (f"{res['test']}: statistic {fmt(res['statistic'], 2)}, p = {fmt_p(res['p_value'])} "
                f"(opposite direction p = {fmt_p(res['p_value_opposite'])}), \u03b1 = {res['alpha']:g}")
        effect = f"{res['effect_size_name']} = {fmt(res['effect_size'], 2)}"
        if "hedges_g" in res:
            effect += f"; Hedges' g = {fmt(res['hedges_g'], 2)}"
        elif "cohens_d" in res:
            effect += f"; Cohen's d = {fmt(res['cohens_d'], 2)}"
        secondary = f"{res['secondary_test']}: t = {fmt(res['secondary_statistic'], 2)}, p = {fmt_p(res['secondary_p_value'])}"
    return {**res, "anchor": slug(res["id"], "claim"), "hypothesis": hyp, "groups": groups,
            "test_text": test, "effect_text": effect, "secondary_text": secondary,
            "p_text": fmt_p(res["p_value"]), "effect_short": fmt(res["effect_size"], 2)}


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
    """Per-job provenance: seeds, threads, accelerator, times, versions, git, host."""
    vkeys = list(dict.fromkeys(k for m in metas for k in (m.get("versions") or {})))
    headers = ["Study", "Variant", "Chunk", "Seeds", "Threads", "Accelerator", "Fit time", "Peak RSS",
               *vkeys, "Git", "Config hash", "Host", "CPU", "Started", "Finished"]
    rows = []
    for m in metas:
        git = m.get("git") or {}
        seeds = m.get("seeds") or []
        rows.append([
            m.get("study", ""), m.get("variant", ""), str(m.get("chunk", "")),
            f"{seeds[0]}\u2013{seeds[-1]} ({len(seeds)})" if seeds else "", str(m.get("threads", "")),
            str(m.get("accelerator", "")), fmt_time(m.get("fit_time_s")),
            f"{fmt(m.get('peak_rss_mb'), 0)} MB", *(str((m.get("versions") or {}).get(k, "")) for k in vkeys),
            f"{str(git.get('commit', ''))[:10]}{' (dirty)' if git.get('dirty') else ''}",
            str(m.get("config_hash", ""))[:12], str(m.get("hostname", "")), str(m.get("cpu", "")),
            str(m.get("started", "")), str(m.get("finished", "")),
        ])
    return {"headers": headers, "rows": rows}


def study_figures(name: str, study: dict, agg: dict, data: dict, boundaries: dict, variants: list) -> list[dict]:
    """The study's five figures as {src, alt, caption}."""
    colors = plots.variant_colors(variants)
    names, n = ", ".join(variants), int(agg["summary"]["n"].max())
    figs = [
        (plots.fig_dataset(data), f"Scatter plot of the {study['dataset']} dataset: train and test points of two classes.",
         f"Dataset {study['dataset']}: {len(data['y_train'])} train points (left), {len(data['y_test'])} test points (right)."),
        (plots.fig_learning_curves(agg["curves"], variants, colors),
         f"Learning curves of {name}: train and test accuracy and loss per epoch, mean ± std over seeds, for {names}.",
         f"Learning curves: mean ± 1 std over up to {n} seeds per variant (Keras-history train metrics, inference-mode test metrics)."),
        (plots.fig_small_multiples(agg["curves"], variants, colors),
         f"Small multiples of {name}: one panel per variant ({names}) with train and test accuracy.",
         "One panel per variant: train (dashed) and test (solid) accuracy, mean ± 1 std; dotted line at 80%."),
        (plots.fig_final_distribution(agg["per_seed"], variants, colors),
         f"Box plots of final train and test accuracy of {name} per variant, with every seed as a point.",
         "Final accuracy after training: box (quartiles, median) plus every seed as a jittered point."),
        (plots.fig_decision_boundaries(boundaries, data, variants),
         f"Decision boundaries of {name}: mean predicted probability of class 1 over seeds per variant, with the data.",
         "Mean predicted probability of class 1 over seeds (black line: 0.5); filled points train, hollow points test."),
    ]
    return [{"src": plots.fig_to_data_uri(f), "alt": alt, "caption": cap} for f, alt, cap in figs]


def study_view(i: int, name: str, study: dict, agg: dict, results_dir: Path, published: dict | None,
               claims: list) -> dict:
    """Everything the template shows for one study (``agg``: its :func:`load_aggregates`)."""
    order = [v for v in study["variants"] if v in set(agg["summary"]["variant"])]
    order += [v for v in agg["summary"]["variant"] if v not in order]
    agg["summary"] = agg["summary"].set_index("variant").loc[order].reset_index()
    data = load_npz(results_dir / "datasets" / f"{study['dataset']}.npz")
    runs = results_dir / "runs" / name
    pub = compare_published(published, agg["summary"], agg["per_seed"]) if published else None
    training = study.get("training", {})
    return {
        "name": name, "id": slug(f"{i}-{name}", "study"), "title": study.get("title") or name,
        "dataset": study["dataset"], "seeds": study.get("seeds"), "training": training,
        "optimizer": ", ".join(f"{k}={v}" for k, v in (training.get("optimizer") or {}).items()),
        "variants": [(v, " \u2192 ".join(layer_text(layer) for layer in study["variants"].get(v, []))) for v in order],
        "figures": study_figures(name, study, agg, data, load_boundaries(runs, order), order),
        "summary": summary_table(agg["summary"]),
        "published": published_table(pub) if pub is not None and len(pub) else None,
        "claims": [c for c in claims if c["study"] == name],
        "metas": load_metas(runs, order),
    }


def render_report(config: dict, results_dir: Path, out_html: Path, provenance: dict | None = None) -> None:
    """Render the whole report to ``out_html`` (atomically)."""
    results_dir, out_html = Path(results_dir), Path(out_html)
    published_path = config.get("published")
    published = load_published(published_path)
    aggs = {name: load_aggregates(results_dir / "aggregate" / name) for name in config["studies"]}
    claims = []
    for claim in config.get("claims") or []:
        ps = aggs[claim["study"]]["per_seed"] if claim.get("study") in aggs else None
        res = check_claim(claim, ps if ps is not None else pd.DataFrame(columns=["variant", claim["metric"]]))
        if ps is None:
            res["note"] = f"study {claim.get('study')!r} is not in this report"
        claims.append(claim_view(res))
    studies = [study_view(i, name, s, aggs[name], results_dir, published, claims)
               for i, (name, s) in enumerate(config["studies"].items())]
    env = Environment(loader=PackageLoader("reglab"), autoescape=select_autoescape(default=True))
    html = env.get_template("report.html.j2").render(
        title=config.get("title") or "reglab: batch normalization, dropout and noise over many seeds",
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        studies=studies, claims=claims,
        verdict_counts={v: sum(c["verdict"] == v for c in claims) for v in ("supported", "contradicted", "inconclusive")},
        published_path=str(published_path or ""), published_available=published is not None,
        published_sources=_source_hosts((published or {}).get("sources")),
        provenance=[(str(k), _value_view(v)) for k, v in (provenance or {}).items()],
        jobs=jobs_table([m for s in studies for m in s["metas"]]),
    )
    _write_text_atomic(html, out_html)


def _write_text_atomic(text: str, path: Path) -> None:
    """Write text via a temporary file in the same directory and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
