"""Report usability: tables in scroll containers, per-study CSV downloads (exact bytes), dark mode, and
figures small enough that the default report stays a few MB (palette PNGs, curves decimated for drawing
with their extremes kept)."""

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from reglab import plots, report
from reglab.report import render_report

#: the most one embedded figure may take in the page (base64 characters): the realistic full-size
#: figures below take 35-165 KB as palette PNGs, 85-460 KB as matplotlib's RGBA PNGs
MAX_FIGURE_CHARS = 200_000


class Tree(HTMLParser):
    """Every start tag with its attributes and its parent's (tag, attributes)."""

    VOID = {"meta", "img", "br", "hr", "input", "link"}

    def __init__(self):
        super().__init__()
        self.stack, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs, self.stack[-1] if self.stack else (None, {})))
        if tag not in self.VOID:
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break


@pytest.fixture(scope="module")
def rendered(make_synthetic_results, tmp_path_factory):
    """(html, Tree, SyntheticResults) of a synthetic report with a grid study (grid tables, grid points)."""
    syn = make_synthetic_results(tmp_path_factory.mktemp("usability"), grid=True, grid2d=True)
    syn.aggregate()
    out = syn.root / "index.html"
    render_report(syn.config, syn.results_dir, out, provenance={"command": "pytest"})
    html = out.read_text()
    tree = Tree()
    tree.feed(html)
    return html, tree, syn


def test_every_table_is_in_a_scroll_container(rendered):
    html, tree, _ = rendered
    tables = [(attrs, parent) for tag, attrs, parent in tree.tags if tag == "table"]
    assert len(tables) >= 10  # claims, per study summary/published, grid tables, grid points, jobs
    for attrs, (ptag, pattrs) in tables:
        assert ptag == "div" and "table-wrap" in pattrs.get("class", "").split(), attrs
    css = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    assert re.search(r"\.table-wrap\s*\{[^}]*overflow-x:\s*auto", css)


def _downloads(tree) -> dict[str, str]:
    """download name -> href of every download link."""
    return {a["download"]: a["href"] for tag, a, _ in tree.tags if tag == "a" and "download" in a}


def test_each_study_links_every_aggregate_csv_with_its_exact_bytes(rendered):
    _, tree, syn = rendered
    links = _downloads(tree)
    expected = {}
    for study in syn.config["studies"]:
        files = sorted((syn.results_dir / "aggregate" / study).glob("*.csv"))
        assert {f.name for f in files} >= {"summary.csv", "per_seed.csv"}
        expected |= {f"{study}_{f.name}": f for f in files}
    assert set(links) == set(expected)
    for name, path in expected.items():
        head, _, data = links[name].partition(",")
        assert head == "data:text/csv;base64"
        assert base64.b64decode(data, validate=True) == path.read_bytes(), name


def test_downloads_sit_in_their_study_section(rendered):
    html, _, syn = rendered
    sections = re.findall(r'<section id="(study-[^"]+)" class="study">(.*?)</section>', html, re.S)
    assert [s for s, _ in sections] == [f"study-{i}-{name}" for i, name in enumerate(syn.config["studies"])]
    for (_, body), study in zip(sections, syn.config["studies"]):
        names = set(re.findall(r'download="([^"]+)"', body))
        assert f"{study}_summary.csv" in names and f"{study}_per_seed.csv" in names
        assert all(n.startswith(f"{study}_") for n in names)


def test_a_csv_over_the_limit_is_named_with_its_path_not_embedded(make_synthetic_results, tmp_path, monkeypatch):
    syn = make_synthetic_results(tmp_path)
    syn.aggregate()
    limit = 6000
    monkeypatch.setattr(report, "MAX_EMBEDDED_CSV_BYTES", limit)
    out = tmp_path / "index.html"
    render_report(syn.config, syn.results_dir, out)
    html = out.read_text()
    tree = Tree()
    tree.feed(html)
    links = _downloads(tree)
    files = sorted((syn.results_dir / "aggregate").glob("*/*.csv"))
    big = [f for f in files if f.stat().st_size > limit]
    small = [f for f in files if f.stat().st_size <= limit]
    assert big and small  # the synthetic curves.csv files are larger than the limit, summaries smaller
    for f in small:
        assert f"{f.parent.name}_{f.name}" in links
    for f in big:
        assert f"{f.parent.name}_{f.name}" not in links
        assert f"{f.name} (" in html and f"too large to embed; in <code>{f}</code>" in html


def _hex_luminance(color: str) -> float:
    """Relative luminance (0 black .. 1 white) of '#rrggbb'."""
    r, g, b = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_dark_mode_media_query_sets_dark_colour_variables(rendered):
    html, _, _ = rendered
    css = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    light = re.match(r"\s*(?:/\*.*?\*/\s*)?:root\s*\{(.*?)\}", css, re.S).group(1)
    dark_block = re.search(r"@media\s*\(prefers-color-scheme:\s*dark\)\s*\{\s*:root\s*\{(.*?)\}", css, re.S)
    assert dark_block, "no prefers-color-scheme: dark block"
    dark = dark_block.group(1)

    def var(block, name):
        return re.search(rf"--{name}:\s*(#[0-9a-fA-F]{{6}})", block).group(1)

    assert _hex_luminance(var(light, "bg")) > 0.9 and _hex_luminance(var(dark, "bg")) < 0.1
    assert _hex_luminance(var(light, "fg")) < 0.2 and _hex_luminance(var(dark, "fg")) > 0.7
    assert "color-scheme: dark" in dark
    assert re.search(r"body\s*\{[^}]*background:\s*var\(--bg\)", css)
    # figures are drawn on white: they keep a light ground on the dark page
    img = re.search(r"figure img\s*\{([^}]*)\}", css).group(1)
    assert re.search(r"background:\s*var\(--figure-bg\)", img) and "--figure-bg" not in dark
    assert _hex_luminance(var(light, "figure-bg")) > 0.9


# --------------------------------------------------------------------------- figure size
def realistic_curves(variants, n_epochs=4000, seed=0) -> pd.DataFrame:
    """A curves.csv like a 4000-epoch study's: rising accuracy, an overfitting test loss, epoch-to-epoch
    noise in the means (label flips, small test sets) and stds over 10 seeds."""
    rng = np.random.default_rng(seed)
    e = np.arange(1, n_epochs + 1, dtype=float)
    rows = []
    for i, v in enumerate(variants):
        noise = 0.004 + 0.01 * i
        acc = 0.5 + (0.35 + 0.02 * i) * (1 - np.exp(-e / (150 + 60 * i)))
        frame = {"variant": v, "epoch": e.astype(int), "n": 10}
        for m in ("train_acc", "test_acc", "train_loss", "test_loss"):
            mean = acc if "acc" in m else 0.7 - 0.6 * (acc - 0.5) + (0.3 * e / n_epochs if m == "test_loss" else 0)
            frame |= {f"{m}_mean": mean + rng.normal(0, noise, e.size),
                      f"{m}_std": np.abs(0.02 + rng.normal(0, noise, e.size)), f"{m}_n": 10}
        rows.append(pd.DataFrame(frame))
    return pd.concat(rows, ignore_index=True)


def realistic_boundaries(variants, rng, grid=80):
    """Decision boundaries like the circles studies': 80x80 mean probabilities of 10 seeds."""
    g = np.linspace(-1.5, 1.5, grid)
    r = np.hypot(*np.meshgrid(g, g))
    return {v: (g, g, 1 / (1 + np.exp(-rng.uniform(6, 12) * (0.75 - r + rng.normal(0, 0.02, r.shape)))), 10)
            for v in variants}


def realistic_circles(rng, n=500):
    def split():
        y = (np.arange(n) % 2).astype(np.float32)
        a = rng.uniform(0, 2 * np.pi, n)
        x = np.c_[np.cos(a), np.sin(a)] * np.where(y == 1, 0.5, 1.0)[:, None] + rng.normal(0, 0.1, (n, 2))
        return x, y
    (xtr, ytr), (xte, yte) = split(), split()
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}


def test_full_size_figures_stay_small_as_palette_pngs():
    rng = np.random.default_rng(1)
    variants = ["overfit", "input_0.01", "hidden_pre_0.1", "input_and_hidden", "weight_noise_0.05",
                "gradient_noise_0.01", "label_flip_0.1"]
    curves = realistic_curves(variants)
    data = realistic_circles(rng)
    per_seed = pd.DataFrame({"variant": np.repeat(variants, 10), "final_train_acc": rng.uniform(0.8, 1.0, 70),
                             "final_test_acc": rng.uniform(0.7, 0.85, 70)})
    figures = {
        "curves": plots.fig_learning_curves(curves, variants),
        "small multiples": plots.fig_small_multiples(curves, variants),
        "boundaries": plots.fig_decision_boundaries(realistic_boundaries(variants[:5], rng), data, variants[:5]),
        "final": plots.fig_final_distribution(per_seed, variants),
        "dataset": plots.fig_dataset(data),
    }
    for name, fig in figures.items():
        uri = plots.fig_to_data_uri(fig)
        raw = base64.b64decode(uri.split(",", 1)[1])
        with Image.open(io.BytesIO(raw)) as im:
            assert im.format == "PNG" and im.mode == "P" and im.width >= 800, (name, im.mode, im.size)
        assert len(uri) < MAX_FIGURE_CHARS, (name, len(uri))


def test_palette_png_keeps_the_figure_colours():
    fig = Figure(figsize=(4, 2), dpi=plots.DPI)
    ax = fig.subplots()
    for k, c in enumerate(plots.OKABE_ITO):
        ax.axvspan(k, k + 1, color=c)
    ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1)
    raw = base64.b64decode(plots.fig_to_data_uri(fig).split(",", 1)[1])
    with Image.open(io.BytesIO(raw)) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    found = {"#%02X%02X%02X" % tuple(p) for p in np.unique(pixels, axis=0)}
    assert set(plots.OKABE_ITO) <= found


def test_report_figures_each_stay_under_the_limit(rendered):
    html, tree, _ = rendered
    srcs = [a["src"] for tag, a, _ in tree.tags if tag == "img"]
    assert len(srcs) >= 10
    assert all(s.startswith("data:image/png;base64,") and len(s) < MAX_FIGURE_CHARS for s in srcs)


# --------------------------------------------------------------------------- decimation
def test_decimation_keeps_every_spike_and_dip_and_the_ends():
    rng = np.random.default_rng(3)
    y = 0.8 + rng.normal(0, 0.01, 4000)
    spikes = {1235: 1.5, 2777: -0.4, 3998: 1.2, 17: -0.2}  # not on an even 10-epoch grid
    for i, v in spikes.items():
        y[i] = v
    y[500:900] = np.nan  # epochs without a finite mean
    idx = plots.decimate_index(y, 400)
    assert len(idx) <= 400 and idx[0] == 0 and idx[-1] == 3999 and np.all(np.diff(idx) > 0)
    assert set(spikes) <= set(idx.tolist())
    assert np.nanmax(y[idx]) == 1.5 and np.nanmin(y[idx]) == -0.4


def test_drawn_learning_curve_reaches_the_curve_extremes():
    curves = realistic_curves(["a"])
    curves.loc[2345, "test_loss_mean"] = 9.0  # one epoch's spike in the mean test loss
    fig = plots.fig_learning_curves(curves, ["a"], max_points=300)
    lines = {ax.get_title(): ax.get_lines()[0] for ax in fig.axes if ax.get_lines()}
    for title, metric in (("test loss", "test_loss_mean"), ("train accuracy", "train_acc_mean")):
        y = lines[title].get_ydata()
        assert len(y) <= 300
        assert y.max() == curves[metric].max() and y.min() == curves[metric].min(), title
    fig.clear()
