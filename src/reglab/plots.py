"""Figures for the report: one function per kind, tidy data in, matplotlib Figure out.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot state), at
fixed sizes, with the colour-blind-safe Okabe-Ito palette; :func:`variant_colors` gives a
variant the same colour in every figure of a study. ``curves`` is the wide ``curves.csv`` of
:mod:`reglab.aggregate` (``variant, epoch, {metric}_mean, {metric}_std``); ``per_seed`` is
``per_seed.csv``. Long curves are decimated to at most ``max_points`` epochs for drawing only
(:func:`decimate_index`: each stretch of epochs keeps its lowest and highest mean, so spikes and
dips stay visible); statistics are never computed from decimated data.
Metrics may be NaN (a diverged seed's, or every seed's once all diverged): curves skip epochs with
no finite mean, per-seed plots skip NaN values, and boundaries may hold NaN (drawn blank).

The dataset figure suits the data's shape (:func:`dataset_kind`, :func:`fig_dataset`): 2-D points
as a scatter, images ``[N, C, H, W]`` as example images per class, sequences ``[N, T, F]`` as a few
sequences per class overlaid; images and sequences also show the class counts of train and test.
Labels are class indices (stored as floats), any number of classes.

:func:`fig_to_data_uri` encodes a figure as an optimised palette PNG (:data:`PNG_COLORS` colours,
no dithering), about a third of matplotlib's RGBA PNG for these plots; figures keep their opaque
white background, so they read the same on the report's light and dark pages.
"""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402
import matplotlib.patches  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402

#: Okabe-Ito colours, ordered for contrast on white (yellow last)
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
CLASS_COLORS = ("#0072B2", "#D55E00")  # class 0, class 1
CLASS_MARKERS = ("o", "^")
#: colours and markers of classes 0, 1, 2 ... (the first two as above; cycle after eight)
CLASS_PALETTE = CLASS_COLORS + tuple(c for c in OKABE_ITO if c not in CLASS_COLORS)
CLASS_MARKER_CYCLE = CLASS_MARKERS + ("s", "D", "v", "P", "X", "*")
#: split colours of the class-count bars
SPLIT_COLORS = {"train": "#4d4d4d", "test": "#a6a6a6"}
PROB_CMAP = LinearSegmentedColormap.from_list("reglab_prob", [CLASS_COLORS[0], "#f7f7f7", CLASS_COLORS[1]])
DPI = 100
MAX_POINTS = 400
#: colours of the palette PNG a figure is encoded as (median cut; 256 keeps colour-map gradients smooth)
PNG_COLORS = 256
#: most panels side by side in a grid of panels (small multiples, decision boundaries)
MAX_PANELS_PER_ROW = 3
#: widest figure in inches (the report shows figures at most about 11.5 in wide at 100 dpi)
MAX_WIDTH = 12.0


def variant_colors(variant_names) -> dict[str, str]:
    """A fixed Okabe-Ito colour per variant, by position (cycles after eight)."""
    return {v: OKABE_ITO[i % len(OKABE_ITO)] for i, v in enumerate(dict.fromkeys(variant_names))}


def _label(text) -> str:
    """Plain text safe as a matplotlib label (no mathtext, not hidden by a leading underscore)."""
    text = str(text).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def decimate_index(values, max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``values`` (a curve in drawing order) that keep its shape.

    The first and last points are kept; the rest is cut into ``(max_points - 2) // 2`` equal stretches
    and each keeps the index of its lowest and of its highest value (NaN ignored; an all-NaN stretch
    keeps its first index), so the global minimum and maximum are always kept. A curve of at most
    ``max_points`` points is kept whole. For drawing only: every statistic uses all points.
    """
    y = np.asarray(values, dtype=float)
    n = y.size
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, (max_points - 2) // 2)
    keep = [0, n - 1]
    for chunk in np.array_split(np.arange(n), buckets):
        seg = y[chunk]
        ok = np.isfinite(seg)
        if not ok.any():
            keep.append(int(chunk[0]))
            continue
        masked = np.where(ok, seg, np.nan)
        keep += [int(chunk[np.nanargmin(masked)]), int(chunk[np.nanargmax(masked)])]
    return np.unique(keep)


def _variant_curve(curves: pd.DataFrame, variant: str) -> pd.DataFrame:
    """One variant's curve rows, sorted by epoch, epochs without any finite mean dropped.

    Mean and std columns are made numeric with non-finite values as NaN.
    """
    c = curves[curves["variant"].astype(str) == str(variant)].copy()
    stats = [col for col in c.columns if col.endswith(("_mean", "_std"))]
    for col in stats:
        c[col] = pd.to_numeric(c[col], errors="coerce").replace([np.inf, -np.inf], np.nan)
    means = [col for col in stats if col.endswith("_mean")]
    if means:
        c = c[c[means].notna().any(axis=1)]
    return c.sort_values("epoch")


def _band(ax, c: pd.DataFrame, metric: str, color: str, label=None, ls: str = "-",
          max_points: int = MAX_POINTS) -> None:
    """Mean line with a +-1 std band (no band where std is undefined); epochs with a NaN mean are skipped.

    At most ``max_points`` epochs are drawn, chosen by :func:`decimate_index` on the mean.
    """
    ok = np.isfinite(c[f"{metric}_mean"].to_numpy(float))
    x = c["epoch"].to_numpy(float)[ok]
    m = c[f"{metric}_mean"].to_numpy(float)[ok]
    s = np.nan_to_num(c[f"{metric}_std"].to_numpy(float)[ok], nan=0.0, posinf=0.0, neginf=0.0)
    keep = decimate_index(m, max_points)
    x, m, s = x[keep], m[keep], s[keep]
    ax.plot(x, m, color=color, lw=1.4, ls=ls, label=label)
    ax.fill_between(x, m - s, m + s, color=color, alpha=0.18, lw=0)


def _grid(n: int, ncols_max: int = MAX_PANELS_PER_ROW, w: float = 3.6, h: float = 3.0, **kw):
    """A Figure with a grid of n panels (extra panels hidden); returns (fig, flat axes)."""
    ncols = max(1, math.ceil(n / math.ceil(n / ncols_max)))  # balanced rows: 4 -> 2x2, 5 -> 3+2
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(w * ncols, h * nrows + 0.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, **kw)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[max(0, n - ncols):n]:  # the lowest visible panel of each column shows its x ticks
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, axes[:n]


def class_color(k: int) -> str:
    """The colour of class index ``k`` (:data:`CLASS_PALETTE`, cycling)."""
    return CLASS_PALETTE[int(k) % len(CLASS_PALETTE)]


def class_labels(*ys) -> np.ndarray:
    """The sorted distinct labels of one or more label arrays (NaN dropped), as integers when they all are."""
    y = np.concatenate([np.asarray(v, dtype=float).ravel() for v in ys]) if ys else np.array([])
    y = np.unique(y[np.isfinite(y)])
    return y.astype(int) if np.all(y == np.round(y)) else y


def _class_text(k) -> str:
    """A label as text: '3' for 3.0."""
    k = float(k)
    return str(int(k)) if k == round(k) else f"{k:g}"


def dataset_kind(data: dict) -> str:
    """``"points"`` (x ``[N, 2]``), ``"sequences"`` (``[N, T, F]``), ``"images"`` (``[N, C, H, W]``),
    else ``"other"`` (e.g. tabular data with more than two features: class counts only)."""
    x = np.asarray(data["x_train"])
    if x.ndim == 2 and x.shape[1] == 2:
        return "points"
    return {3: "sequences", 4: "images"}.get(x.ndim, "other")


def _points(ax, x, y, filled: bool, size: float = 14) -> None:
    """Scatter every class (0 and 1 for binary data), filled (train) or hollow (test)."""
    y = np.asarray(y).round().astype(int)
    for k in sorted(set(np.unique(y)) | {0, 1}):
        sel = y == k
        color, marker = class_color(k), CLASS_MARKER_CYCLE[k % len(CLASS_MARKER_CYCLE)]
        style = dict(c=color, edgecolors="black", linewidths=0.3) if filled else \
            dict(facecolors="none", edgecolors=color, linewidths=0.9)
        ax.scatter(x[sel, 0], x[sel, 1], s=size, marker=marker, **style)


def fig_dataset(data: dict) -> Figure:
    """The dataset figure that suits the data's shape (:func:`dataset_kind`): :func:`fig_dataset_points`,
    :func:`fig_dataset_images`, :func:`fig_dataset_sequences`, or only :func:`fig_class_counts`."""
    return {"points": fig_dataset_points, "images": fig_dataset_images,
            "sequences": fig_dataset_sequences}.get(dataset_kind(data), fig_class_counts)(data)


def fig_dataset_points(data: dict) -> Figure:
    """Train and test points of a 2-D dataset (``x_train, y_train, x_test, y_test``), one colour and marker per class."""
    fig = Figure(figsize=(8, 3.8), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, split in zip(axes, ("train", "test")):
        x, y = np.asarray(data[f"x_{split}"]), np.asarray(data[f"y_{split}"])
        _points(ax, x, y, filled=True, size=16)
        ax.set_title(f"{split} ({len(y)} points)")
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("x1")
    axes[0].set_ylabel("x2")
    classes = sorted(set(class_labels(data["y_train"], data["y_test"]).astype(int)) | {0, 1})
    handles = [axes[0].scatter([], [], c=class_color(k), marker=CLASS_MARKER_CYCLE[k % len(CLASS_MARKER_CYCLE)],
                               edgecolors="black", linewidths=0.3, label=f"class {k}") for k in classes]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 5), frameon=False)
    return fig


def _class_counts(ax, data: dict, classes) -> None:
    """Grouped bars: examples per class in train and test, each bar labelled with its count."""
    pos = np.arange(len(classes))
    width = 0.4
    for i, split in enumerate(("train", "test")):
        y = np.asarray(data[f"y_{split}"], dtype=float)
        counts = [int(np.sum(y == k)) for k in classes]
        bars = ax.bar(pos + (i - 0.5) * width, counts, width, color=SPLIT_COLORS[split],
                      label=f"{split} ({len(y)})")
        if len(classes) <= 20:
            ax.bar_label(bars, fontsize="x-small", padding=1)
    ax.set_xticks(pos, [_class_text(k) for k in classes], rotation=90 if len(classes) > 20 else 0)
    ax.set_xlabel("class")
    ax.set_ylabel("examples")
    ax.set_title("class counts")
    ax.set_ylim(0, 1.3 * max(ax.get_ylim()[1], 1))  # headroom for the counts and the legend
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize="small", loc="upper left", ncols=2)


def fig_class_counts(data: dict) -> Figure:
    """Only the class counts of train and test (for data without a more specific figure)."""
    classes = class_labels(data["y_train"], data["y_test"])
    fig = Figure(figsize=(max(5.0, min(MAX_WIDTH, 1.0 + 0.6 * len(classes))), 3.6), dpi=DPI, layout="constrained")
    _class_counts(fig.subplots(), data, classes)
    return fig


def _examples(y, k, n: int) -> np.ndarray:
    """Indices of the first ``n`` examples of class ``k`` in ``y``."""
    return np.flatnonzero(np.asarray(y, dtype=float) == k)[:n]


def fig_dataset_images(data: dict, per_class: int = 2, max_classes: int = 12) -> Figure:
    """Example training images (``x [N, C, H, W]``) with their labels, ``per_class`` per class for the
    first ``max_classes`` classes (one column per class, grey scale ``gray_r`` for one channel, RGB for
    three; else the first channel), and below them the class counts of train and test."""
    x = np.asarray(data["x_train"], dtype=float)
    y = np.asarray(data["y_train"], dtype=float)
    classes = class_labels(data["y_train"], data["y_test"])
    shown = classes[:max_classes]
    ncols = max(1, len(shown))
    width = min(MAX_WIDTH, max(6.0, 0.9 * ncols + 1.0))
    fig = Figure(figsize=(width, 0.95 * per_class * width / max(ncols, 6) + 3.4), dpi=DPI, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[0.95 * per_class * width / max(ncols, 6), 3.2])
    finite = x[np.isfinite(x)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    axes = np.atleast_2d(top.subplots(per_class, ncols, squeeze=False))
    for c, k in enumerate(shown):
        idx = _examples(y, k, per_class)
        for r in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r < len(idx):
                img = x[idx[r]]
                if img.shape[0] == 3:
                    ax.imshow(np.clip((np.moveaxis(img, 0, -1) - lo) / ((hi - lo) or 1.0), 0, 1))
                else:
                    ax.imshow(img[0], cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_title(_class_text(k), fontsize="small", pad=2)
            else:
                ax.set_axis_off()
    more = f" (first {len(shown)} of {len(classes)} classes)" if len(classes) > len(shown) else ""
    h, w = x.shape[-2:]
    top.suptitle(f"training examples ({h}×{w}), labelled by class{more}", fontsize="medium")
    _class_counts(bottom.subplots(), data, classes)
    return fig


def fig_dataset_sequences(data: dict, per_class: int = 3) -> Figure:
    """``per_class`` training sequences (``x [N, T, F]``, feature 0) per class overlaid, one colour per
    class (left), and the class counts of train and test (right)."""
    x = np.asarray(data["x_train"], dtype=float)
    y = np.asarray(data["y_train"], dtype=float)
    classes = class_labels(data["y_train"], data["y_test"])
    fig = Figure(figsize=(10, 3.8), dpi=DPI, layout="constrained")
    ax, counts = fig.subplots(1, 2, width_ratios=[1.7, 1])
    t = np.arange(x.shape[1])
    for i, k in enumerate(classes):
        for j, n in enumerate(_examples(y, k, per_class)):
            ax.plot(t, x[n, :, 0], color=class_color(i), lw=1.2, alpha=0.85,
                    label=f"class {_class_text(k)}" if j == 0 else None)
    feature = f", feature 1 of {x.shape[2]}" if x.shape[2] > 1 else ""
    ax.set_title(f"{per_class} training sequences per class{feature}")
    ax.set_xlabel("time step")
    ax.set_ylabel("value")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncols=min(len(classes), 6),
               frameon=False)
    _class_counts(counts, data, classes)
    return fig


def fig_learning_curves(curves: pd.DataFrame, variants, colors=None, max_points: int = MAX_POINTS) -> Figure:
    """Accuracy and loss (rows) for train and test (columns): every variant's mean +- std."""
    colors = colors or variant_colors(variants)
    fig = Figure(figsize=(10, 7), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True, sharey="row")
    for v in variants:
        c = _variant_curve(curves, v)
        for r, kind in enumerate(("acc", "loss")):
            for k, split in enumerate(("train", "test")):
                _band(axes[r, k], c, f"{split}_{kind}", colors[v], label=_label(v) if r == k == 0 else None,
                      max_points=max_points)
    for k, split in enumerate(("train", "test")):
        axes[0, k].set_title(f"{split} accuracy")
        axes[1, k].set_title(f"{split} loss")
        axes[1, k].set_xlabel("epoch")
    axes[0, 0].set_ylabel("accuracy")
    axes[1, 0].set_ylabel("loss")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    fig.legend(loc="outside upper center", ncols=max(1, min(len(variants), 4)), frameon=False)
    return fig


def fig_small_multiples(curves: pd.DataFrame, variants, colors=None, max_points: int = MAX_POINTS,
                        threshold: float = 0.80) -> Figure:
    """One panel per variant: train (dashed) and test (solid) accuracy, mean +- std; at most
    :data:`MAX_PANELS_PER_ROW` panels per row."""
    colors = colors or variant_colors(variants)
    fig, axes = _grid(len(variants), sharex=True, sharey=True)
    for ax, v in zip(axes, variants):
        c = _variant_curve(curves, v)
        _band(ax, c, "train_acc", colors[v], label="train", ls="--", max_points=max_points)
        _band(ax, c, "test_acc", colors[v], label="test", max_points=max_points)
        ax.axhline(threshold, color="grey", lw=0.8, ls=":")
        ax.set_title(_label(v))
        ax.grid(alpha=0.3)
    for ax in axes:
        if ax.xaxis.get_tick_params()["labelbottom"]:
            ax.set_xlabel("epoch")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="lower right", frameon=False, fontsize="small")
    return fig


def fig_final_distribution(per_seed: pd.DataFrame, variants, colors=None,
                           metrics=("final_train_acc", "final_test_acc")) -> Figure:
    """Box plot plus every seed as a jittered point (NaN values skipped), one panel per metric.

    Panels sit side by side while that fits :data:`MAX_WIDTH`, else one above the other.
    """
    colors = colors or variant_colors(variants)
    panel = max(3.0, 1.1 * len(variants) + 1)
    side = panel * len(metrics) <= MAX_WIDTH
    size = (max(6.0, panel * len(metrics)), 4.2) if side else (min(MAX_WIDTH, panel), 3.6 * len(metrics))
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1 if side else len(metrics), len(metrics) if side else 1, sharey=True,
                                      squeeze=False)).ravel()
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes, metrics):
        vals = [pd.to_numeric(per_seed.loc[per_seed["variant"].astype(str) == str(v), metric], errors="coerce")
                .to_numpy(float) for v in variants]
        vals = [x[np.isfinite(x)] for x in vals]
        pos = np.arange(1, len(variants) + 1)
        keep = [i for i, x in enumerate(vals) if x.size]
        bp = ax.boxplot([vals[i] for i in keep], positions=pos[keep], widths=0.55, showfliers=False,
                        patch_artist=True, medianprops=dict(color="black"))
        for i, box in zip(keep, bp["boxes"]):
            box.set(facecolor=colors[variants[i]] + "33", edgecolor=colors[variants[i]])
        for p, v, x in zip(pos, variants, vals):
            ax.scatter(p + rng.uniform(-0.18, 0.18, x.size), x, s=16, color=colors[v],
                       edgecolors="black", linewidths=0.3, zorder=3)
        tilt = len(variants) > 3
        ax.set_xticks(pos, [_label(v) for v in variants], rotation=30 if tilt else 0, ha="right" if tilt else "center",
                      rotation_mode="anchor")
        ax.set_title(metric.replace("_", " "))
        ax.grid(axis="y", alpha=0.3)
    for ax in axes if not side else axes[:1]:
        ax.set_ylabel("accuracy")
    return fig


def fig_decision_boundaries(boundaries: dict, data: dict, variants) -> Figure:
    """Per variant: mean predicted P(class 1) over seeds as an image, the 0.5 contour, and points.

    ``boundaries[variant] = (grid_x [G], grid_y [G], prob [G, G], n_seeds[, n_diverged])`` with
    ``prob[i, j]`` at ``(grid_x[j], grid_y[i])``; variants without a boundary are skipped. NaN
    probabilities are drawn blank; a variant whose every seed diverged (all NaN) gets a panel saying so.
    At most :data:`MAX_PANELS_PER_ROW` panels per row.
    """
    shown = [v for v in variants if v in boundaries]
    fig, axes = _grid(max(1, len(shown)), w=3.4, h=3.0, sharex=True, sharey=True)
    image = None
    for ax, v in zip(axes, shown):
        gx, gy, prob, n, *rest = boundaries[v]
        diverged = int(rest[0]) if rest else 0
        prob = np.ma.masked_invalid(np.asarray(prob, dtype=float))
        if prob.count():
            image = ax.pcolormesh(gx, gy, prob, cmap=PROB_CMAP, vmin=0, vmax=1, shading="nearest", rasterized=True)
            if prob.min() < 0.5 < prob.max():
                ax.contour(gx, gy, prob, levels=[0.5], colors="black", linewidths=1.0)
        else:
            ax.text(0.5, 0.5, "every seed diverged", ha="center", va="center", transform=ax.transAxes,
                    bbox=dict(facecolor="white", edgecolor="grey"), zorder=5)
        _points(ax, np.asarray(data["x_train"]), data["y_train"], filled=True, size=10)
        _points(ax, np.asarray(data["x_test"]), data["y_test"], filled=False, size=10)
        extra = f", {diverged} diverged" if diverged else ""
        note = f"(mean of {n} seeds{extra})"
        sep = "\n" if len(str(v)) + len(note) > 34 else " "  # long titles wrap instead of running into the next panel
        ax.set_title(f"{_label(v)}{sep}{note}", fontsize="medium")
        ax.set_aspect("equal", adjustable="box")
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="P(class 1)")
    else:
        axes[0].text(0.5, 0.5, "no boundary data", ha="center", va="center", transform=axes[0].transAxes)
    return fig


#: the metrics a grid figure shows by default, one panel each
GRID_METRICS = ("final_test_acc", "peak_test_acc")


def grid_xscale(values, ratio: float = 50.0) -> tuple[str, float | None]:
    """``("symlog", linthresh)`` when the nonzero ``|values|`` span ``ratio`` or more (0, 0.005 ... 1.0),
    else ``("linear", None)``; ``linthresh`` is the smallest nonzero ``|value|`` (so 0 sits one step
    below it)."""
    x = np.abs(np.asarray(list(values), dtype=float))
    pos = x[np.isfinite(x) & (x > 0)]
    if pos.size >= 2 and pos.max() / pos.min() >= ratio:
        return "symlog", float(pos.min())
    return "linear", None


def _baseline_band(ax, b, color: str) -> None:
    """A baseline row (``variant, mean, ci_low, ci_high``) as a horizontal band (its CI) and a dashed line (its mean)."""
    if np.isfinite(b["ci_low"]) and np.isfinite(b["ci_high"]):
        ax.axhspan(b["ci_low"], b["ci_high"], color=color, alpha=0.15, lw=0,
                   label=_label(f"{b['variant']} (baseline): 95% CI"))
    if np.isfinite(b["mean"]):
        ax.axhline(b["mean"], color=color, lw=1.2, ls="--", label=_label(f"{b['variant']} (baseline): mean"))


def fig_grid(points: pd.DataFrame, xlabel: str = "value", metrics=GRID_METRICS, color: str = OKABE_ITO[1],
             baseline_color: str = OKABE_ITO[0], best=None) -> Figure:
    """A one-parameter grid: each metric's mean with its 95% CI against the grid value, one panel per metric.

    ``points`` is tidy, one row per (variant, metric): ``role`` (``"grid"`` or ``"baseline"``),
    ``variant``, ``value`` (the grid value; NaN for the baseline), ``metric``, ``mean``,
    ``ci_low``, ``ci_high`` (NaN when undefined). Grid rows are drawn as a line with CI error bars
    in ``color`` (the base variant's colour); the baseline as a horizontal band (its CI) and a dashed
    line (its mean) in ``baseline_color``. The x axis is symlog when the values span orders of
    magnitude (:func:`grid_xscale`), ticked at the grid values. ``best`` (a grid value) is marked.
    """
    fig = Figure(figsize=(10, 4.2), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=True, squeeze=False)).ravel()
    kind = points["role"].astype(str)
    grid = points[kind == "grid"]
    values = sorted(set(pd.to_numeric(grid["value"], errors="coerce").dropna()))
    scale, linthresh = grid_xscale(values)
    for ax, metric in zip(axes, metrics):
        g = grid[grid["metric"] == metric].copy()
        g["value"] = pd.to_numeric(g["value"], errors="coerce")
        g = g.dropna(subset=["value"]).sort_values("value")
        for _, b in points[(kind == "baseline") & (points["metric"] == metric)].iterrows():
            _baseline_band(ax, b, baseline_color)
        x, m = g["value"].to_numpy(float), g["mean"].to_numpy(float)
        lo, hi = g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float)
        err = np.vstack([np.nan_to_num(m - lo), np.nan_to_num(hi - m)])
        ok = np.isfinite(m)
        ax.errorbar(x[ok], m[ok], yerr=err[:, ok], color=color, marker="o", ms=5, lw=1.5, capsize=3,
                    label="grid: mean ± 95% CI", zorder=3)
        if best is not None and metric == metrics[0]:
            sel = np.isclose(x, float(best)) & ok
            ax.scatter(x[sel], m[sel], s=160, facecolors="none", edgecolors="black", linewidths=1.4, zorder=4,
                       label=f"best value ({float(best):g})")
        if scale == "symlog":
            ax.set_xscale("symlog", linthresh=linthresh, linscale=0.6)
            ax.xaxis.set_minor_locator(NullLocator())
        if values and len(values) <= 12:
            ax.set_xticks(values, [f"{v:g}" for v in values], rotation=45 if len(values) > 7 else 0)
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel(_label(xlabel))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda k: "(baseline)" in labels[k])  # grid entries first
    handles, labels = [handles[k] for k in order], [labels[k] for k in order]
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(handles), 4), frameon=False)
    return fig


#: the colour map of grid heatmaps: sequential, perceptually uniform, readable with colour-blindness
HEATMAP_CMAP = "viridis"


def _value_text(v) -> str:
    """A grid value as a tick label ('0.01', '1', '0')."""
    return f"{float(v):g}"


def fig_grid_heatmap(cells: pd.DataFrame, x: str, y: str, xlabel: str | None = None, ylabel: str | None = None,
                     best: tuple | None = None, baseline: float | None = None,
                     label: str = "mean final test accuracy", cmap: str = HEATMAP_CMAP) -> Figure:
    """A grid over two options as a heatmap of one statistic, a cell per pair of values.

    ``cells`` is tidy, one row per grid point: column ``x`` (the value on the horizontal axis), column
    ``y`` (on the vertical axis) and ``mean`` (the cell's value; NaN: no results, drawn blank with a
    dash). Values keep the order of their first appearance (the config's), the first at the left and
    at the bottom, evenly spaced. Every cell is annotated with its mean (3 decimals) in black or white
    for contrast; ``best`` (an ``(x, y)`` pair) is boxed and labelled "best cell"; ``baseline`` (a
    mean) is marked on the colour bar with a dashed line.
    """
    xs = list(dict.fromkeys(cells[x].tolist()))
    ys = list(dict.fromkeys(cells[y].tolist()))
    grid = np.full((len(ys), len(xs)), np.nan)
    for _, r in cells.iterrows():
        grid[ys.index(r[y]), xs.index(r[x])] = float(r["mean"]) if np.isfinite(float(r["mean"])) else np.nan
    finite = grid[np.isfinite(grid)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.005, hi + 0.005
    width = min(MAX_WIDTH, max(5.5, 1.0 * len(xs) + 3.2))
    fig = Figure(figsize=(width, max(3.6, 0.75 * len(ys) + 2.0)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    masked = np.ma.masked_invalid(grid)
    colours = matplotlib.colormaps[cmap].with_extremes(bad="#f0f0f0")  # cells without results: light grey
    image = ax.imshow(masked, cmap=colours, vmin=lo, vmax=hi, origin="lower", aspect="auto", interpolation="nearest")
    small = "x-small" if len(xs) > 6 else "small"
    for i in range(len(ys)):
        for j in range(len(xs)):
            v = grid[i, j]
            if np.isfinite(v):
                dark = (v - lo) / (hi - lo) < 0.55  # viridis is dark at the low end
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=small,
                        color="white" if dark else "black")
            else:
                ax.text(j, i, "\u2013", ha="center", va="center", fontsize=small, color="#57606a")
    handles = []
    if best is not None and best[0] in xs and best[1] in ys:
        j, i = xs.index(best[0]), ys.index(best[1])
        handles.append(ax.add_patch(matplotlib.patches.Rectangle(
            (j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="black", lw=3.2, zorder=3, label="best cell")))
        ax.add_patch(matplotlib.patches.Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="white",
                                                  lw=1.2, zorder=4))
    ax.set_xticks(range(len(xs)), [_value_text(v) for v in xs], rotation=45 if len(xs) > 7 else 0)
    ax.set_yticks(range(len(ys)), [_value_text(v) for v in ys])
    ax.set_xlabel(_label(xlabel or x))
    ax.set_ylabel(_label(ylabel or y))
    ax.set_xticks(np.arange(len(xs) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(ys) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=1.5)
    ax.tick_params(which="minor", length=0)
    bar = fig.colorbar(image, ax=ax, shrink=0.9, label=_label(label))
    if baseline is not None and np.isfinite(baseline):
        where = "" if lo <= baseline <= hi else (", below the scale" if baseline < lo else ", above the scale")
        handles.append(bar.ax.axhline(min(max(float(baseline), lo), hi), color="black", lw=1.8, ls="--",
                                      label=f"baseline mean {baseline:.3f} (colour bar{where})"))
    if handles:
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False, fontsize="small")
    return fig


def fig_grid_marginals(marginals: pd.DataFrame, xlabels: dict | None = None, color: str = OKABE_ITO[1],
                       baseline: pd.Series | dict | None = None, baseline_color: str = OKABE_ITO[0],
                       ylabel: str = "mean final test accuracy") -> Figure:
    """The marginal curves of a grid over several options: one small panel per axis.

    ``marginals`` is tidy, one row per (axis, value): ``axis`` (its name), ``value``, ``mean``,
    ``ci_low``, ``ci_high`` (NaN when undefined), drawn as a line with CI error bars in ``color``
    against the value (symlog x when the values span orders of magnitude, :func:`grid_xscale`).
    ``xlabels`` maps an axis to its x label; ``baseline`` (``variant, mean, ci_low, ci_high``) is drawn
    in every panel as in :func:`fig_grid`. Panels share the y axis.
    """
    axes_names = list(dict.fromkeys(marginals["axis"].tolist()))
    n = max(1, len(axes_names))
    fig = Figure(figsize=(min(MAX_WIDTH, 3.8 * n + 0.6), 3.6), dpi=DPI, layout="constrained")
    panels = np.atleast_1d(fig.subplots(1, n, sharey=True, squeeze=False)).ravel()
    for ax, name in zip(panels, axes_names):
        g = marginals[marginals["axis"] == name]
        x, m = g["value"].to_numpy(float), g["mean"].to_numpy(float)
        lo, hi = g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float)
        if baseline is not None:
            _baseline_band(ax, baseline, baseline_color)
        order = np.argsort(x, kind="stable")
        x, m, lo, hi = x[order], m[order], lo[order], hi[order]
        ok = np.isfinite(m)
        err = np.vstack([np.nan_to_num(m - lo), np.nan_to_num(hi - m)])
        ax.errorbar(x[ok], m[ok], yerr=err[:, ok], color=color, marker="o", ms=5, lw=1.5, capsize=3,
                    label="marginal mean ± 95% CI", zorder=3)
        scale, linthresh = grid_xscale(x)
        if scale == "symlog":
            ax.set_xscale("symlog", linthresh=linthresh, linscale=0.6)
            ax.xaxis.set_minor_locator(NullLocator())
        if len(x) <= 12:
            ax.set_xticks(x, [_value_text(v) for v in x], rotation=45 if len(x) > 6 else 0)
        ax.set_title(_label(name))
        ax.set_xlabel(_label((xlabels or {}).get(name, name)))
        ax.grid(alpha=0.3)
    panels[0].set_ylabel(_label(ylabel))
    handles, labels = panels[0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda k: "(baseline)" in labels[k])
    if handles:
        fig.legend([handles[k] for k in order], [labels[k] for k in order], loc="outside upper center",
                   ncols=min(len(handles), 3), frameon=False)
    return fig


def png_bytes(fig: Figure, dpi: int = DPI, colors: int = PNG_COLORS) -> bytes:
    """The figure as an optimised palette PNG of at most ``colors`` colours (median cut, no dithering).

    Rendered by matplotlib at ``dpi``, flattened onto white (figures are opaque white anyway) and
    quantised with Pillow: line art and colour maps lose nothing visible and the file shrinks to
    about a third. The figure is closed (cleared) afterwards.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    fig.clear()  # built without pyplot, so clearing releases it (pyplot holds no reference)
    with Image.open(io.BytesIO(buf.getvalue())) as rendered:
        rgba = rendered.convert("RGBA")
    rgb = Image.new("RGB", rgba.size, "white")
    rgb.paste(rgba, mask=rgba.getchannel("A"))
    palette = rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue()


def fig_to_data_uri(fig: Figure, dpi: int = DPI) -> str:
    """The figure as a base64 palette-PNG ``data:`` URI (:func:`png_bytes`); the figure is closed
    (cleared) afterwards."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi)).decode("ascii")
