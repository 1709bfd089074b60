"""Figures: consistent colours, downsampling, each figure kind renders to a PNG data URI."""

import base64

import matplotlib.colors
from matplotlib.collections import QuadMesh
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from reglab import plots


def curves_frame(variants, n_epochs):
    """A wide curves table like curves.csv."""
    rows = []
    for i, v in enumerate(variants):
        e = np.arange(1, n_epochs + 1)
        acc = 0.5 + 0.3 * (1 - np.exp(-e / (10 + i)))
        frame = {"variant": v, "epoch": e, "n": 5}
        for m in ("train_acc", "test_acc", "train_loss", "test_loss"):
            frame |= {f"{m}_mean": acc if "acc" in m else 1 - acc, f"{m}_std": np.full(e.size, 0.02), f"{m}_n": 5}
        rows.append(pd.DataFrame(frame))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return {"x_train": rng.normal(size=(30, 2)), "y_train": (np.arange(30) % 2).astype(np.float32),
            "x_test": rng.normal(size=(70, 2)), "y_test": (np.arange(70) % 2).astype(np.float32)}


def png_bytes(uri):
    assert uri.startswith("data:image/png;base64,")
    raw = base64.b64decode(uri.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 1000
    return raw


def test_variant_colors_are_okabe_ito_and_stable():
    a = plots.variant_colors(["overfit", "dropout_0.4"])
    b = plots.variant_colors(["overfit", "input_0.01", "hidden_pre_0.1"])
    assert a["overfit"] == b["overfit"] == plots.OKABE_ITO[0]
    assert set(a.values()) <= set(plots.OKABE_ITO)
    many = plots.variant_colors([f"v{i}" for i in range(9)])
    assert len(set(list(many.values())[:8])) == 8 and many["v8"] == many["v0"]


def test_decimate_index_keeps_ends():
    idx = plots.decimate_index(np.sin(np.arange(4000) / 50), 400)
    assert len(idx) <= 400 and idx[0] == 0 and idx[-1] == 3999 and np.all(np.diff(idx) > 0)
    assert list(plots.decimate_index(np.arange(5.0), 400)) == [0, 1, 2, 3, 4]


def test_learning_curves_downsample_long_runs():
    variants = ["a", "b"]
    fig = plots.fig_learning_curves(curves_frame(variants, 4000), variants, max_points=300)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 and all(len(line.get_xdata()) <= 300 for line in lines)
    assert lines[0].get_color() == plots.variant_colors(variants)["a"]
    png_bytes(plots.fig_to_data_uri(fig))
    assert not fig.axes  # closed (cleared) after conversion


def test_every_figure_kind_renders(data):
    variants = ["overfit", "dropout_0.4", "$weird_"]
    curves = curves_frame(variants, 30)
    per_seed = pd.DataFrame({"variant": np.repeat(variants, 5), "final_test_acc": np.linspace(0.7, 0.85, 15),
                             "final_train_acc": np.linspace(0.9, 1.0, 15)})
    g = np.linspace(-1.5, 1.5, 20)
    prob = 1 / (1 + np.exp(-8 * (0.75 - np.hypot(*np.meshgrid(g, g)))))
    boundaries = {"overfit": (g, g, prob, 5), "dropout_0.4": (g, g, prob, 5)}  # third variant has none
    figs = [plots.fig_dataset(data), plots.fig_learning_curves(curves, variants),
            plots.fig_small_multiples(curves, variants), plots.fig_final_distribution(per_seed, variants),
            plots.fig_decision_boundaries(boundaries, data, variants)]
    for fig in figs:
        assert isinstance(fig, Figure)
        png_bytes(plots.fig_to_data_uri(fig))


def test_small_multiples_one_panel_per_variant():
    variants = ["a", "b", "c", "d"]
    fig = plots.fig_small_multiples(curves_frame(variants, 10), variants)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == variants


def test_decision_boundaries_without_data_still_render(data):
    png_bytes(plots.fig_to_data_uri(plots.fig_decision_boundaries({}, data, ["a"])))


def grid_frame(values, means, baseline=(0.75, 0.73, 0.77), metrics=plots.GRID_METRICS):
    """A tidy grid table like report.grid_points: grid rows per value and metric, plus a baseline."""
    rows = []
    for metric in metrics:
        for i, (v, m) in enumerate(zip(values, means)):
            rows.append({"role": "grid", "variant": f"g_{v}", "value": v, "metric": metric, "n": 5,
                         "mean": m, "ci_low": m - 0.02, "ci_high": m + 0.02})
        if baseline is not None:
            rows.append({"role": "baseline", "variant": "overfit", "value": np.nan, "metric": metric, "n": 5,
                         "mean": baseline[0], "ci_low": baseline[1], "ci_high": baseline[2]})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("values", "scale"), [
    ([0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0], "symlog"),
    ([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], "linear"),
    ([0.001, 0.01, 0.1], "symlog"),
    ([0.5], "linear"),
    ([0.0], "linear"),
])
def test_grid_xscale(values, scale):
    got, linthresh = plots.grid_xscale(values)
    assert got == scale
    assert (linthresh == min(v for v in values if v > 0)) if scale == "symlog" else linthresh is None


def test_fig_grid_draws_curve_band_and_best():
    values = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    means = [0.75, 0.76, 0.77, 0.79, 0.80, 0.82, 0.81, 0.78, 0.70]
    fig = plots.fig_grid(grid_frame(values, means), "stddev", color=plots.OKABE_ITO[2],
                         baseline_color=plots.OKABE_ITO[0], best=0.1)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["final test acc", "peak test acc"]
    for ax in axes:
        assert ax.get_xscale() == "symlog" and ax.get_xlabel() == "stddev"
        assert list(ax.get_xticks()) == values
        curve = [c.lines[0] for c in ax.containers]  # errorbar: the data line (caps and bars aside)
        assert len(curve) == 1 and curve[0].get_color() == plots.OKABE_ITO[2]
        assert list(curve[0].get_xdata()) == values and list(curve[0].get_ydata()) == means
        band = [p for p in ax.patches if p.get_facecolor()[:3] == matplotlib.colors.to_rgb(plots.OKABE_ITO[0])]
        assert len(band) == 1  # the baseline's CI as a horizontal band
        ys = band[0].get_patch_transform().transform(band[0].get_path().vertices)[:, 1]
        assert np.isclose(ys.min(), 0.73) and np.isclose(ys.max(), 0.77)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "best value (0.1)" in texts and any("overfit (baseline)" in t for t in texts)
    png_bytes(plots.fig_to_data_uri(fig))


def test_fig_grid_linear_axis_missing_points_and_no_baseline():
    values = [0.0, 0.1, 0.2, 0.3]
    means = [0.7, np.nan, 0.8, 0.75]  # a grid point without results yet
    frame = grid_frame(values, means, baseline=None)
    frame.loc[frame["value"] == 0.3, ["ci_low", "ci_high"]] = np.nan  # a single seed: no interval
    fig = plots.fig_grid(frame, "rate")
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear"
    curve = [c.lines[0] for c in ax.containers]
    assert len(curve) == 1 and list(curve[0].get_xdata()) == [0.0, 0.2, 0.3]
    assert not ax.patches
    png_bytes(plots.fig_to_data_uri(fig))


# --------------------------------------------------------------------------- crowded studies, diverged seeds
def _rows_of_panels(fig):
    """Visible panels per row of a panel grid, top to bottom."""
    rows = {}
    for ax in fig.axes:
        if ax.get_visible() and ax.get_subplotspec() is not None:
            rows.setdefault(ax.get_subplotspec().rowspan.start, []).append(ax)
    return [len(rows[k]) for k in sorted(rows)]


@pytest.mark.parametrize("n", [1, 4, 7, 8, 13])
def test_small_multiples_and_boundaries_cap_panels_per_row(data, n):
    variants = [f"v{i}" for i in range(n)]
    rows = _rows_of_panels(plots.fig_small_multiples(curves_frame(variants, 10), variants))
    assert sum(rows) == n and max(rows) <= plots.MAX_PANELS_PER_ROW
    g = np.linspace(-1.5, 1.5, 8)
    prob = np.full((8, 8), 0.3)
    boundaries = {v: (g, g, prob, 5) for v in variants}
    rows = _rows_of_panels(plots.fig_decision_boundaries(boundaries, data, variants))
    assert sum(rows) == n and max(rows) <= plots.MAX_PANELS_PER_ROW


def test_learning_curves_skip_nan_epochs():
    """A variant whose every seed diverged at epoch 21 has all-NaN means from there; another has NaN gaps."""
    variants = ["a", "b"]
    curves = curves_frame(variants, 40)
    late = (curves["variant"] == "b") & (curves["epoch"] > 20)
    curves.loc[late, [c for c in curves.columns if c.endswith(("_mean", "_std"))]] = np.nan
    curves.loc[(curves["variant"] == "a") & (curves["epoch"] == 5), "test_acc_mean"] = np.nan
    curves.loc[(curves["variant"] == "a") & (curves["epoch"] == 6), "test_acc_std"] = np.nan
    fig = plots.fig_learning_curves(curves, variants)
    for ax in fig.axes:
        for line in ax.get_lines():
            assert np.isfinite(line.get_ydata()).all()
        for band in ax.collections:
            assert np.isfinite(band.get_paths()[0].vertices).all()
    train_acc, test_acc = fig.axes[0].get_lines(), fig.axes[1].get_lines()
    assert list(train_acc[1].get_xdata()) == list(range(1, 21))  # b: epochs without a finite mean dropped
    assert 5 not in list(test_acc[0].get_xdata()) and len(test_acc[0].get_xdata()) == 39
    small = plots.fig_small_multiples(curves, variants)
    assert max(small.axes[1].get_lines()[0].get_xdata()) == 20
    png_bytes(plots.fig_to_data_uri(fig))
    png_bytes(plots.fig_to_data_uri(small))


def test_curves_with_every_epoch_nan_still_render():
    curves = curves_frame(["a"], 10)
    curves[[c for c in curves.columns if c.endswith("_mean")]] = np.nan
    for fig in (plots.fig_learning_curves(curves, ["a"]), plots.fig_small_multiples(curves, ["a"])):
        curves_drawn = [line for ax in fig.axes for line in ax.get_lines()
                        if line.get_linestyle() != ":"]  # not the dotted 80% line
        assert curves_drawn and all(len(line.get_xdata()) == 0 for line in curves_drawn)
        png_bytes(plots.fig_to_data_uri(fig))


def test_decision_boundaries_with_nan_and_every_seed_diverged(data):
    g = np.linspace(-1.5, 1.5, 20)
    prob = 1 / (1 + np.exp(-8 * (0.75 - np.hypot(*np.meshgrid(g, g)))))
    holes = prob.copy()
    holes[:3, :] = np.nan  # grid points NaN in every kept seed: drawn blank
    boundaries = {"ok": (g, g, holes, 4, 1), "gone": (g, g, np.full_like(prob, np.nan), 0, 5), "old": (g, g, prob, 5)}
    fig = plots.fig_decision_boundaries(boundaries, data, ["ok", "gone", "old"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles == ["ok (mean of 4 seeds, 1 diverged)", "gone (mean of 0 seeds, 5 diverged)", "old (mean of 5 seeds)"]
    gone = [ax for ax in fig.axes if ax.get_title().startswith("gone")][0]
    assert [t.get_text() for t in gone.texts] == ["every seed diverged"]
    assert not [c for c in gone.collections if isinstance(c, QuadMesh)]  # no image, only the data points
    png_bytes(plots.fig_to_data_uri(fig))


def test_final_distribution_skips_nan_and_stacks_when_wide():
    few, many = ["a", "b", "c"], [f"variant_{i}" for i in range(8)]
    for variants, side in ((few, True), (many, False)):
        per_seed = pd.DataFrame({"variant": np.repeat(variants, 5),
                                 "final_test_acc": np.linspace(0.7, 0.85, 5 * len(variants)),
                                 "final_train_acc": np.linspace(0.9, 1.0, 5 * len(variants))})
        per_seed.loc[per_seed.index[::5], ["final_test_acc", "final_train_acc"]] = np.nan  # a diverged seed each
        fig = plots.fig_final_distribution(per_seed, variants)
        assert fig.get_figwidth() <= plots.MAX_WIDTH
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert len({ax.get_subplotspec().rowspan.start for ax in axes}) == (1 if side else 2)
        points = [c for c in axes[0].collections if c.get_offsets().shape[0] == 4]
        assert len(points) == len(variants)  # 4 finite seeds per variant drawn
        png_bytes(plots.fig_to_data_uri(fig))


# --------------------------------------------------------------------------- dataset figure by kind of data
def images_data(n_classes=3, n_train=30, n_test=20, channels=1):
    """x [N, C, 5, 5] in [0, 1], labels 0..n_classes-1 (as float32, like the engine stores them)."""
    rng = np.random.default_rng(1)
    return {"x_train": rng.uniform(size=(n_train, channels, 5, 5)).astype(np.float32),
            "y_train": (np.arange(n_train) % n_classes).astype(np.float32),
            "x_test": rng.uniform(size=(n_test, channels, 5, 5)).astype(np.float32),
            "y_test": (np.arange(n_test) % n_classes).astype(np.float32)}


def sequences_data(n_classes=2, n_train=20, n_test=10, length=15, features=1):
    rng = np.random.default_rng(2)
    return {"x_train": rng.normal(size=(n_train, length, features)).astype(np.float32),
            "y_train": (np.arange(n_train) % n_classes).astype(np.float32),
            "x_test": rng.normal(size=(n_test, length, features)).astype(np.float32),
            "y_test": (np.arange(n_test) % n_classes).astype(np.float32)}


def _bar_heights(ax):
    """Class-count bars of an axes: {split label: [heights]} (from the legend's labels)."""
    return {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}


def test_dataset_kind_follows_the_shape(data):
    assert plots.dataset_kind(data) == "points"
    assert plots.dataset_kind(images_data()) == "images"
    assert plots.dataset_kind(sequences_data()) == "sequences"
    assert plots.dataset_kind({**data, "x_train": np.zeros((30, 5))}) == "other"  # tabular, not 2-D


@pytest.mark.parametrize(("make", "chosen"), [
    (lambda d: d, "fig_dataset_points"),
    (lambda d: images_data(), "fig_dataset_images"),
    (lambda d: sequences_data(), "fig_dataset_sequences"),
    (lambda d: {**d, "x_train": np.zeros((30, 5)), "x_test": np.zeros((70, 5))}, "fig_class_counts"),
])
def test_fig_dataset_dispatches_by_shape(data, monkeypatch, make, chosen):
    called = []
    for name in ("fig_dataset_points", "fig_dataset_images", "fig_dataset_sequences", "fig_class_counts"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda d, _n=name, _r=real: (called.append(_n), _r(d))[1])
    fig = plots.fig_dataset(make(data))
    assert called == [chosen]
    png_bytes(plots.fig_to_data_uri(fig))


def test_dataset_images_show_examples_per_class_with_labels_and_counts():
    d = images_data(n_classes=3)
    d["y_train"][d["y_train"] == 2] = 0  # class 2 only in the test split: its column stays empty
    d["y_train"][0] = 2  # ... but for one example
    fig = plots.fig_dataset_images(d, per_class=2)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in image_axes] == ["0", "1", "2", "0", "1"]  # row by row: 2 per class, 1 of class 2
    assert all(ax.images[0].get_cmap().name == "gray_r" for ax in image_axes)
    first = image_axes[0].images[0].get_array()
    assert np.allclose(first, d["x_train"][np.flatnonzero(d["y_train"] == 0)[0], 0])  # the first of class 0
    counts = next(ax for ax in fig.axes if ax.containers)
    heights = _bar_heights(counts)
    assert heights == {"train (30)": [19, 10, 1], "test (20)": [7, 7, 6]}
    assert [t.get_text() for t in counts.get_xticklabels()] == ["0", "1", "2"]
    png_bytes(plots.fig_to_data_uri(fig))


def test_dataset_images_cap_classes_and_accept_rgb():
    fig = plots.fig_dataset_images(images_data(n_classes=15, n_train=60), max_classes=12)
    assert len([ax for ax in fig.axes if ax.images]) == 24
    assert any("(first 12 of 15 classes)" in t.get_text() for sf in fig.subfigs for t in sf.texts)
    png_bytes(plots.fig_to_data_uri(fig))
    rgb = plots.fig_dataset_images(images_data(channels=3))
    assert all(ax.images[0].get_array().shape == (5, 5, 3) for ax in rgb.axes if ax.images)
    png_bytes(plots.fig_to_data_uri(rgb))


def test_dataset_sequences_overlay_a_few_per_class_one_colour_each():
    d = sequences_data(n_classes=3, n_train=30, features=2)
    fig = plots.fig_dataset_sequences(d, per_class=3)
    seq_ax, counts = fig.axes
    lines = seq_ax.get_lines()
    assert len(lines) == 9 and all(len(line.get_xdata()) == 15 for line in lines)
    colors = [line.get_color() for line in lines]
    assert colors == [plots.class_color(k) for k in (0, 1, 2) for _ in range(3)]
    assert len(set(colors)) == 3
    assert np.allclose(lines[0].get_ydata(), d["x_train"][0, :, 0])  # the first feature
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["class 0", "class 1", "class 2"]
    assert _bar_heights(counts) == {"train (30)": [10, 10, 10], "test (10)": [4, 3, 3]}
    png_bytes(plots.fig_to_data_uri(fig))


def test_dataset_points_show_every_class(data):
    three = {**data, "y_train": (np.arange(30) % 3).astype(np.float32)}
    fig = plots.fig_dataset_points(three)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["class 0", "class 1", "class 2"]
    drawn = [c for c in fig.axes[0].collections if c.get_offsets().shape[0]]
    assert [c.get_offsets().shape[0] for c in drawn] == [10, 10, 10]
    binary = plots.fig_dataset_points(data)  # binary data: as before, classes 0 and 1 in their colours
    assert [t.get_text() for t in binary.legends[0].get_texts()] == ["class 0", "class 1"]
    assert plots.class_color(0) == plots.CLASS_COLORS[0] and plots.class_color(1) == plots.CLASS_COLORS[1]
