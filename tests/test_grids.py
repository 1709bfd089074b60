"""Grids over several parameters (issue 12): the config's multi-axis form (cartesian product, tied
layers, readable names, recorded points, one ConfigError per mistake at its key path), the heatmap
and marginal figures, and the report's block of a grid over two or more axes."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats as st

from reglab import plots
from reglab.config import ConfigError, load_config, validate_config, variant_spec
from reglab.report import axes_grid_view, best_grid_point, grid_marginals, grid_points, render_report

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "config.yaml"
TINY = REPO / "config" / "tiny.yaml"
STDDEVS = [0.0, 0.01, 0.05, 0.1]


@pytest.fixture
def raw():
    return load_config(CONFIG)


@pytest.fixture(scope="module")
def shipped():
    return validate_config(load_config(CONFIG))


def _options(layer: dict) -> dict:
    (options,) = layer.values()
    return options


# --------------------------------------------------------------------------- expansion
def test_shipped_noise_grid_over_two_axes(shipped):
    noise = shipped["studies"]["noise_ext"]
    grid = next(g for g in noise["grids"] if g["id"] == "noise2d")
    assert grid["variants"] == [f"noise2d_input{a}_hidden{b}" for a in STDDEVS for b in STDDEVS]  # first axis slowest
    assert grid["points"] == [{"input": a, "hidden": b} for a in STDDEVS for b in STDDEVS]
    assert grid["name"] == "{id}_input{input}_hidden{hidden}"  # the default template, recorded
    base = variant_spec(shipped, "noise_ext", "input_and_hidden")
    for name, point in zip(grid["variants"], grid["points"]):
        spec = variant_spec(shipped, "noise_ext", name)
        assert _options(spec["layers"][0]) == {"stddev": point["input"]}
        assert _options(spec["layers"][2]) == {"stddev": point["hidden"]}
        assert [spec["layers"][i] for i in (1, 3, 4)] == [base["layers"][i] for i in (1, 3, 4)]
        assert spec["training"] == base["training"]
    assert "noise2d_input0.01_hidden0.05" in noise["variants"]


def test_shipped_dropout_rate_by_max_norm(shipped):
    dropout = shipped["studies"]["dropout_ext"]
    grid = next(g for g in dropout["grids"] if g["id"] == "dropout_maxnorm")
    assert len(grid["variants"]) == 12 and grid["variants"][:2] == ["dropout_0.2_maxnorm_1", "dropout_0.2_maxnorm_2"]
    # the base variant is one of the points: it stays where and as it was written (max_norm 3.0)
    assert grid["variants"][6] == "dropout_0.4_maxnorm_3" and grid["points"][6] == {"rate": 0.4, "maxnorm": 3}
    assert dropout["variants"]["dropout_0.4_maxnorm_3"][0]["dense"]["max_norm"] == 3.0
    spec = variant_spec(shipped, "dropout_ext", "dropout_0.6_maxnorm_1")
    assert spec["layers"][0]["dense"]["max_norm"] == 1 and spec["layers"][1] == {"dropout": {"rate": 0.6}}
    tiny = validate_config(load_config(TINY))
    (two,) = [g for g in tiny["studies"]["dropout"]["grids"] if "axes" in g]
    assert [len(a["values"]) for a in two["axes"]] == [2, 2] and len(two["variants"]) == 4


def test_one_parameter_grids_are_unchanged(shipped):
    """The one-parameter form: same names, name template filled in, no points."""
    grid = shipped["studies"]["dropout_ext"]["grids"][0]
    assert grid["variants"] == [f"dropout_{r / 10}" for r in range(10)]
    assert grid["name"] == "dropout_{value}" and "points" not in grid and "axes" not in grid
    raw = load_config(TINY)
    raw["studies"]["dropout"]["grids"] = [{"id": "r", "base": "dropout_0.4", "layer": 2, "param": "rate",
                                            "values": [0.1, 0.3]}]
    grid = validate_config(raw)["studies"]["dropout"]["grids"][0]
    assert grid == {"id": "r", "base": "dropout_0.4", "layer": 2, "param": "rate", "values": [0.1, 0.3],
                    "name": "{id}_{value}", "variants": ["r_0.1", "r_0.3"]}


def _tiny_with(grid: dict) -> dict:
    raw = load_config(TINY)
    raw["studies"]["dropout"]["grids"].append(grid)
    return raw


def test_tied_layers_training_axes_and_a_name_template():
    raw = load_config(TINY)
    raw["studies"]["dropout"]["variants"]["two_drop"] = [
        {"dense": {"units": 16, "activation": "relu"}}, {"dropout": {"rate": 0.1}},
        {"dense": {"units": 16, "activation": "relu"}}, {"dropout": {"rate": 0.1}},
        {"dense": {"units": 1, "activation": "sigmoid"}}]
    raw["studies"]["dropout"]["grids"].append({
        "id": "tied", "base": "two_drop", "name": "tied_r{rate}_lr{lr}_f{flip}",
        "axes": [{"name": "rate", "layers": [1, 3], "param": "rate", "values": [0.2, 0.5]},
                 {"name": "lr", "param": "optimizer.lr", "values": [0.01, 0.001]},
                 {"name": "flip", "param": "label_flip", "values": [0.0, 0.1]}]})
    config = validate_config(raw)
    study = config["studies"]["dropout"]
    grid = study["grids"][-1]
    assert grid["variants"][:3] == ["tied_r0.2_lr0.01_f0.0", "tied_r0.2_lr0.01_f0.1", "tied_r0.2_lr0.001_f0.0"]
    assert len(grid["variants"]) == 8 and grid["points"][-1] == {"rate": 0.5, "lr": 0.001, "flip": 0.1}
    spec = variant_spec(config, "dropout", "tied_r0.5_lr0.01_f0.1")
    assert spec["layers"][1] == spec["layers"][3] == {"dropout": {"rate": 0.5}}  # one value on both layers
    # a training option inside the optimizer keeps the study's optimizer (adam) and its other settings
    assert spec["training"]["optimizer"] == {**variant_spec(config, "dropout", "two_drop")["training"]["optimizer"],
                                             "lr": 0.01}
    assert spec["training"]["label_flip"] == 0.1
    assert validate_config(config) == config  # idempotent, as the workflow revalidates the written config
    assert validate_config(json.loads(json.dumps(config))) == config


def test_a_shape_changing_axis_makes_variants_of_different_shapes():
    config = validate_config(_tiny_with({
        "id": "wide", "base": "dropout_0.4",
        "axes": [{"name": "units", "layer": 1, "param": "units", "values": [8, 32]},
                 {"name": "rate", "layer": 2, "param": "rate", "values": [0.1, 0.5]}]}))
    grid = config["studies"]["dropout"]["grids"][-1]
    assert grid["variants"] == ["wide_units8_rate0.1", "wide_units8_rate0.5", "wide_units32_rate0.1",
                                "wide_units32_rate0.5"]
    assert [variant_spec(config, "dropout", v)["layers"][1]["dense"]["units"] for v in grid["variants"]] == [8, 8, 32, 32]


# --------------------------------------------------------------------------- mistakes: one ConfigError at the key path
AXES = [{"name": "noise", "layer": 0, "param": "stddev", "values": [0.0, 0.05]},
        {"name": "rate", "layer": 2, "param": "rate", "values": [0.2, 0.6]}]
WHERE = ("studies", "dropout", "grids", 2)  # tiny.yaml's dropout study has two grids; the edit adds a third


def _axes_grid(**changes):
    grid = {"id": "g", "base": "dropout_0.4", "axes": copy.deepcopy(AXES), "baseline": "overfit"}
    for path, value in changes.items():
        keys = [int(k) if k.isdigit() else k for k in path.split("__")]
        target = grid
        for key in keys[:-1]:
            target = target[key]
        if value is DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return grid


DELETE = object()
BAD = {
    "duplicate value in an axis": (_axes_grid(axes__1__values=[0.2, 0.6, 0.2]), ("axes", 1, "values", 2),
                                   "duplicate value 0.2 (also values[0])"),
    "duplicate value, int and float": (_axes_grid(axes__0__values=[0, 0.0]), ("axes", 0, "values", 1),
                                       "duplicate value 0.0"),
    "duplicate value in a one-parameter grid": (
        {"id": "g", "base": "dropout_0.4", "layer": 2, "param": "rate", "values": [0.1, 0.3, 0.1]},
        ("values", 2), "duplicate value 0.1 (also values[0])"),
    "empty axis values": (_axes_grid(axes__0__values=[]), ("axes", 0, "values"), "must not be empty"),
    "empty values": ({"id": "g", "base": "dropout_0.4", "layer": 2, "param": "rate", "values": []}, ("values",),
                     "must not be empty"),
    "no axes": (_axes_grid(axes=[]), ("axes",), "must not be empty"),
    "param the layer lacks": (_axes_grid(axes__0__param="stdev"), ("axes", 0, "param"),
                              "layer 0 (gaussian_noise) of variant 'dropout_0.4' has no parameter 'stdev' (has: stddev)"),
    "param a tied layer lacks": (_axes_grid(axes__1__layers=[2, 1], axes__1__layer=DELETE), ("axes", 1, "param"),
                                 "layer 1 (dense) of variant 'dropout_0.4' has no parameter 'rate' (has: units,"),
    "layer out of range": (_axes_grid(axes__1__layer=4), ("axes", 1, "layer"),
                           "base variant 'dropout_0.4' has 4 layers; there is no layer 4"),
    "tied layer out of range": (_axes_grid(axes__1__layers=[2, 7], axes__1__layer=DELETE), ("axes", 1, "layers", 1),
                                "base variant 'dropout_0.4' has 4 layers; there is no layer 7"),
    "tied layer twice": (_axes_grid(axes__1__layers=[2, 2], axes__1__layer=DELETE), ("axes", 1, "layers", 1),
                         "layer 2 is listed twice (also layers[0])"),
    "layer and layers": (_axes_grid(axes__1__layers=[2]), ("axes", 1, "layers"),
                         "an axis sets layer (one layer) or layers (several, tied), not both"),
    "duplicate axis names": (_axes_grid(axes__1__name="noise"), ("axes", 1, "name"),
                             "duplicate axis name 'noise' (also axes[0])"),
    "axis named id": (_axes_grid(axes__1__name="id"), ("axes", 1, "name"), "the axis name 'id' is taken"),
    "two axes set one option": (_axes_grid(axes__1__layer=0, axes__1__param="stddev"), ("axes", 1, "param"),
                                "axis 'rate' varies the same option as axis 'noise' (stddev)"),
    "axes and param": (_axes_grid(param="rate"), ("axes",),
                       "a grid varies one parameter (param, values) or several (axes), not both; it has axes and param"),
    "neither axes nor param": (_axes_grid(axes=DELETE), (), "a grid needs param and values (one parameter) or "
                               "axes (several); missing 'param' and 'values'"),
    "unknown key in an axis": (_axes_grid(axes__0__step=2), ("axes", 0), "unknown key 'step'"),
    "bad axis name": (_axes_grid(axes__0__name="in put"), ("axes", 0, "name"), "does not match"),
    "invalid axis value": (_axes_grid(axes__1__values=[0.2, 1.5]), ("axes", 1, "values", 1),
                           "axis 'rate' value 1.5 gives an invalid variant: 1.5 is greater than or equal to the "
                           "maximum of 1 (at [2].dropout.rate)"),
    "unknown placeholder": (_axes_grid(name="g_{noise}_{rate}_{value}"), ("name",),
                            "unknown placeholder {value} in the name template (allowed: {id}, {noise}, {rate})"),
    "template without an axis": (_axes_grid(name="g_{noise}"), ("name",),
                                 "the name template 'g_{noise}' lacks {rate}"),
    "one-parameter template without {value}": (
        {"id": "g", "base": "dropout_0.4", "layer": 2, "param": "rate", "values": [0.1], "name": "g_{id}"},
        ("name",), "lacks {value}"),
    "invalid point name": (_axes_grid(name="g {noise} {rate}"), ("name",),
                           "grid point name 'g 0.0 0.2' is not a valid name"),
    "points with one name": (
        _axes_grid(name="g{units}{noise}", axes=[{"name": "units", "layer": 1, "param": "units", "values": [1, 11]},
                                                 {"name": "noise", "layer": 0, "param": "stddev", "values": [11, 1]}]),
        ("name",), "grid point 'g111' (units = 11, noise = 1) has the same name as another point of this grid "
                   "(units = 1, noise = 11)"),
    "clash with a variant": (_axes_grid(name="every_{noise}{rate}", axes__0__values=[0.0, 0.05]), None, None),
}


@pytest.mark.parametrize("case", BAD)
def test_each_mistake_is_one_config_error_at_its_key_path(case):
    grid, path, detail = BAD[case]
    raw = _tiny_with(copy.deepcopy(grid))
    if path is None:  # a point named like an existing, different variant
        raw["studies"]["dropout"]["variants"]["every_0.00.2"] = raw["studies"]["dropout"]["variants"]["overfit"]
        path, detail = ("name",), "grid point 'every_0.00.2' (noise = 0.0, rate = 0.2) clashes with a different variant"
    with pytest.raises(ConfigError) as info:
        validate_config(raw, source="tiny.yaml")
    assert info.value.path == (*WHERE, *path), str(info.value)
    assert detail in str(info.value)
    assert str(info.value).startswith("config error in tiny.yaml at studies.dropout.grids[2]")
    assert "\n" not in str(info.value)


def test_the_default_name_clashing_points_at_the_id():
    raw = _tiny_with(_axes_grid())
    raw["studies"]["dropout"]["variants"]["g_noise0.0_rate0.2"] = raw["studies"]["dropout"]["variants"]["overfit"]
    with pytest.raises(ConfigError, match="clashes with a different variant") as info:
        validate_config(raw)
    assert info.value.path == (*WHERE, "id")


def test_a_point_equal_to_a_written_variant_is_that_variant():
    """A point named like an explicit variant with the same layers is that variant (as the base in the
    shipped dropout grid): no error, the written one kept."""
    raw = _tiny_with(_axes_grid(name="dropout_{rate}_n{noise}"))
    raw["studies"]["dropout"]["variants"]["dropout_0.2_n0.0"] = [
        {"gaussian_noise": {"stddev": 0}}, {"dense": {"units": 64, "activation": "relu"}}, {"dropout": {"rate": 0.2}},
        {"dense": {"units": 1, "activation": "sigmoid"}}]
    study = validate_config(raw)["studies"]["dropout"]
    assert study["variants"]["dropout_0.2_n0.0"][0] == {"gaussian_noise": {"stddev": 0}}
    assert "dropout_0.2_n0.0" in study["grids"][2]["variants"]


# --------------------------------------------------------------------------- figures
def _cells(means):
    """A 3 x 2 grid's tidy cells (axis ``a`` rows, ``b`` columns) with the given means, row by row."""
    values = [(a, b) for a in (0.0, 0.05, 0.1) for b in (4, 8)]
    return pd.DataFrame([{"a": a, "b": b, "mean": m} for (a, b), m in zip(values, means)])


def test_fig_grid_heatmap_cells_annotations_and_best():
    means = [0.80, 0.81, 0.86, np.nan, 0.83, 0.79]
    fig = plots.fig_grid_heatmap(_cells(means), "b", "a", "units (layer 1, dense)", "noise: stddev (layer 0)",
                                 best=(4, 0.05), baseline=0.7)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    (image,) = ax.get_images()
    data = image.get_array()
    assert data.shape == (3, 2) and data.mask[1, 1] and np.isclose(data[1, 0], 0.86)  # rows: a, columns: b
    assert image.get_cmap().name.startswith("viridis")
    texts = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts}
    assert texts == {(0, 0): "0.800", (1, 0): "0.810", (0, 1): "0.860", (1, 1): "\u2013", (0, 2): "0.830",
                     (1, 2): "0.790"}
    boxes = [p for p in ax.patches if p.get_label() == "best cell"]
    assert len(boxes) == 1 and np.allclose(np.add(boxes[0].get_xy(), 0.47), (0, 1))  # column b=4, row a=0.05
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "8"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "0.05", "0.1"]
    assert ax.get_xlabel() == "units (layer 1, dense)" and ax.get_ylabel() == "noise: stddev (layer 0)"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["best cell", "baseline mean 0.700 (colour bar, below the scale)"]
    plots.fig_to_data_uri(fig)


def test_fig_grid_heatmap_without_best_or_results():
    fig = plots.fig_grid_heatmap(_cells([np.nan] * 6), "b", "a")
    assert not [p for p in fig.axes[0].patches if p.get_label() == "best cell"] and not fig.legends
    plots.fig_to_data_uri(fig)


def test_fig_grid_marginals_one_panel_per_axis():
    marginals = pd.DataFrame([{"axis": ax, "value": v, "mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01}
                              for ax, vs in (("noise", (0.0, 0.05, 0.1)), ("units", (4, 8)))
                              for v, m in zip(vs, (0.8, 0.85, 0.82))])
    fig = plots.fig_grid_marginals(marginals, {"noise": "stddev (layer 0, gaussian_noise)"}, color=plots.OKABE_ITO[2],
                                   baseline={"variant": "base", "mean": 0.7, "ci_low": 0.69, "ci_high": 0.71})
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["noise", "units"]
    assert [ax.get_xlabel() for ax in axes] == ["stddev (layer 0, gaussian_noise)", "units"]
    curves = [[c.lines[0] for c in ax.containers] for ax in axes]
    assert list(curves[0][0].get_ydata()) == [0.8, 0.85, 0.82] and list(curves[1][0].get_xdata()) == [4, 8]
    assert curves[0][0].get_color() == plots.OKABE_ITO[2]
    assert all(len(ax.patches) == 1 for ax in axes)  # the baseline's band in each panel
    plots.fig_to_data_uri(fig)


# --------------------------------------------------------------------------- report
GRID = {"id": "g", "base": "b", "baseline": "base",
        "axes": [{"name": "x", "layer": 0, "param": "rate", "values": [0.1, 0.2]},
                 {"name": "y", "param": "label_flip", "values": [0.0, 0.5]}],
        "variants": ["g_x0.1_y0.0", "g_x0.1_y0.5", "g_x0.2_y0.0", "g_x0.2_y0.5"],
        "points": [{"x": 0.1, "y": 0.0}, {"x": 0.1, "y": 0.5}, {"x": 0.2, "y": 0.0}, {"x": 0.2, "y": 0.5}]}
DENSE = {"dense": {"units": 1, "activation": "sigmoid"}}


def _per_seed():
    rows = []
    for v, base in zip(GRID["variants"], (0.70, 0.80, 0.90, 0.60)):
        rows += [{"variant": v, "seed": s, "final_test_acc": base + 0.01 * s, "peak_test_acc": 0.95,
                  "diverged_epoch": 0} for s in range(3)]
    rows += [{"variant": "base", "seed": s, "final_test_acc": 0.5 + 0.01 * s, "peak_test_acc": 0.9,
              "diverged_epoch": 0} for s in range(3)]
    rows[1]["diverged_epoch"], rows[1]["final_test_acc"] = 4, np.nan  # g_x0.1_y0.0 seed 1 diverged
    return pd.DataFrame(rows)


def test_grid_points_and_marginals_of_a_two_axis_grid():
    per_seed = _per_seed()
    points = grid_points(per_seed, GRID, metrics=("final_test_acc",))
    assert list(points["variant"]) == [*GRID["variants"], "base"]
    assert list(points["axis:x"].iloc[:4]) == [0.1, 0.1, 0.2, 0.2] and np.isnan(points["axis:y"].iloc[4])
    best = best_grid_point(points)
    assert best["variant"] == "g_x0.2_y0.0" and best["point"] == {"x": 0.2, "y": 0.0}
    assert best["overlap"] is False and best["side"] == "higher"
    marginals = grid_marginals(per_seed, GRID).set_index(["axis", "value"])
    # x = 0.1: per seed the mean of its finite points (seed 1 has only y = 0.5); then mean and t-interval over seeds
    per_seed_means = [np.mean([0.70, 0.80]), 0.81, np.mean([0.72, 0.82])]
    lo, hi = st.t.interval(0.95, 2, loc=np.mean(per_seed_means), scale=st.sem(per_seed_means))
    assert np.allclose(marginals.loc[("x", 0.1), ["n", "mean", "ci_low", "ci_high"]].to_numpy(float),
                       [3, np.mean(per_seed_means), lo, hi])
    assert np.isclose(marginals.loc[("y", 0.5), "mean"], np.mean([0.70, 0.71, 0.72]))


def test_axes_grid_view_sentence_table_and_figures():
    study = {"variants": {"b": [{"dropout": {"rate": 0.3}}, DENSE], "base": [DENSE]}, "variant_training": {}}
    view = axes_grid_view(0, "s", study, GRID, _per_seed(), {})
    assert view["sentence"].startswith("Best point: x = 0.2, y = 0 (variant g_x0.2_y0.0), mean final test accuracy "
                                       "0.910 (95% CI")
    assert "The intervals do not overlap: the best point is higher than the baseline." in view["sentence"]
    assert [a["label"] for a in view["axes"]] == ["rate (layer 0, dropout)", "training label_flip"]
    assert [f["kind"] for f in view["figures"]] == ["heatmap", "marginals"]
    assert all(f["src"].startswith("data:image/png;base64,") and f["alt"] and f["caption"] for f in view["figures"])
    table = view["table"]
    assert table["headers"] == ["Variant", "x", "y", "n", "Final test acc", "95% CI", "CI overlaps baseline", "Mark"]
    assert [r[0] for r in table["rows"]] == [*GRID["variants"], "base"]
    assert table["rows"][0][3] == "2" and table["rows"][2][-1] == "best" and table["rows"][-1][-1] == "baseline"
    assert table["row_classes"] == ["", "", "grid-best-cell", "", "grid-baseline"]
    assert table["rows"][2][6] == "no (higher)" and table["rows"][-1][1:3] == ["\u2013", "\u2013"]
    three = {**GRID, "axes": GRID["axes"] + [{"name": "z", "param": "epochs", "values": [5]}],
             "points": [{**p, "z": 5} for p in GRID["points"]]}
    view = axes_grid_view(0, "s", study, three, _per_seed(), {})
    assert view["figures"] == [] and "3 axes" in view["note"] and len(view["table"]["rows"]) == 5
    no_base = axes_grid_view(0, "s", study, {**GRID, "baseline": None}, _per_seed(), {})
    assert "No baseline is configured" in no_base["sentence"] and no_base["table"]["rows"][2][6] == "\u2013"


class _Blocks(HTMLParser):
    """Per grid block: its tags (tag, attributes) and its text."""

    def __init__(self):
        super().__init__()
        self.blocks, self.text, self.depth, self.current = {}, {}, 0, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and attrs.get("class") == "grid-block":
            self.current, self.depth = attrs["id"], 0
        if self.current:
            self.depth += tag == "div"
            self.blocks.setdefault(self.current, []).append((tag, attrs))

    def handle_endtag(self, tag):
        if self.current and tag == "div":
            self.depth -= 1
            if self.depth == 0:
                self.current = None

    def handle_data(self, data):
        if self.current:
            self.text[self.current] = self.text.get(self.current, "") + data + " "


@pytest.fixture(scope="module")
def rendered_axes(make_synthetic_results, tmp_path_factory):
    syn = make_synthetic_results(tmp_path_factory.mktemp("axes"), grid=True, grid2d=True)
    syn.aggregate()
    out = syn.root / "index.html"
    render_report(syn.config, syn.results_dir, out)
    html = out.read_text()
    parser = _Blocks()
    parser.feed(html)
    return html, parser, syn


def test_synthetic_axes_grids_are_what_validation_makes(rendered_axes):
    _, _, syn = rendered_axes
    config = copy.deepcopy(syn.config)
    for study in config["studies"].values():
        for grid in study["grids"]:
            if "axes" in grid and grid["name"] == "{id}_" + "_".join(f"{a['name']}{{{a['name']}}}" for a in grid["axes"]):
                del grid["name"]  # the default template, filled in
            for key in ("variants", "points"):
                grid.pop(key, None)
    validated = validate_config(config)["studies"]["bn_ext"]
    for ours, theirs in zip(syn.config["studies"]["bn_ext"]["grids"], validated["grids"]):
        assert ours["variants"] == theirs["variants"] and ours.get("points") == theirs.get("points")
    for grid in validated["grids"]:
        for v, point in zip(grid.get("variants", []), grid.get("points", [])):
            layers = validated["variants"][v]
            assert len(layers) == len(syn.config["studies"]["bn_ext"]["variants"][v])
            for axis in grid["axes"]:
                for i in axis.get("layers", [axis.get("layer")]):
                    assert _options(layers[i])[axis["param"]] == point[axis["name"]], v


def test_report_two_axis_grid_block(rendered_axes):
    html, parser, syn = rendered_axes
    block = "grid-2-bn_ext-noise_units"
    tags = parser.blocks[block]
    imgs = [a for t, a in tags if t == "img"]
    assert len(imgs) == 2 and all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert imgs[0]["alt"].startswith("Heatmap of grid Input noise x hidden units of study bn_ext")
    assert [a.get("class") for t, a in tags if t == "figure"] == ["grid-heatmap", "grid-marginals"]
    assert [a.get("class") for t, a in tags if t == "table"] == ["grid-cells"]
    per_seed = pd.read_csv(syn.results_dir / "aggregate" / "bn_ext" / "per_seed.csv")
    grid = next(g for g in syn.config["studies"]["bn_ext"]["grids"] if g["id"] == "noise_units")
    means = per_seed.groupby("variant")["final_test_acc"].mean()
    best = max(grid["variants"], key=lambda v: means[v])
    point = grid["points"][grid["variants"].index(best)]
    assert best == "noise_units_noise0.05_units8"  # the synthetic grid is designed so
    text = " ".join(parser.text[block].split())
    assert f"Best point: noise = {point['noise']:g}, units = {point['units']:g} (variant {best})" in text
    assert "Baseline (baseline): " in text and "noise = stddev (layer 0, gaussian_noise) over 0, 0.05, 0.1" in text
    rows = re.findall(r'<tr( class="[^"]*")?><th scope="row">([^<]+)</th>(.*?)</tr>', html[html.index(f'id="{block}"'):]
                      .split("</table>")[0], re.S)
    assert [r[1] for r in rows] == [*grid["variants"], "baseline"]
    marked = {r[1]: (r[0], re.findall(r"<td>([^<]*)</td>", r[2])[-1]) for r in rows}
    assert marked[best] == (' class="grid-best-cell"', "best") and marked["baseline"] == (' class="grid-baseline"',
                                                                                          "baseline")
    assert sum(mark == "best" for _, mark in marked.values()) == 1
    assert f'<a href="#{block}">Grid: Input noise x hidden units</a>' in html


def test_report_three_axis_grid_block_is_a_table(rendered_axes):
    html, parser, syn = rendered_axes
    tags = parser.blocks["grid-2-bn_ext-bn3"]
    assert not [a for t, a in tags if t == "img"]
    assert [a.get("class") for t, a in tags if t == "table"] == ["grid-cells"]
    assert "shown as a table of its points" in parser.text["grid-2-bn_ext-bn3"]
    assert "momentum = momentum (layers 0, 2, batch_norm)" in " ".join(parser.text["grid-2-bn_ext-bn3"].split())
    items = dict(re.findall(r"<li><code>([^<]+)</code>: (.*?)</li>", html[html.index('id="study-2-bn_ext"'):], re.S))
    assert "grid bn3: momentum = 0.9, epsilon = 0.01, units = 4" in items["bn3_m0.9_e0.01_u4"]
    assert "grid noise_units: noise = 0.05, units = 8" in items["noise_units_noise0.05_units8"]
    # the one-parameter grids render as before, in the same study
    assert len([a for t, a in parser.blocks["grid-2-bn_ext-momentum"] if t == "img"]) == 1
