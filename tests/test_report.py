"""The report renders from the synthetic tree: every section, table and figure; self-contained; escaped."""

import re
from pathlib import Path
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from reglab.aggregate import ResultsError
from reglab import plots
from reglab.config import load_config, validate_config
from reglab.report import (best_grid_point, figure_variants, grid_only_variants, grid_points, grid_view,
                           load_boundaries, load_metas, render_report, summary_table)

PROVENANCE = {"command": "snakemake -c4", "date": "2026-01-01", "wall time": "12 s",
              "git": {"commit": "abc123", "dirty": True}, "config hash": "feedbeef", "versions": {"torch": "2.13.0"},
              "cpu": "Test CPU", "cores": 16, "threads per training job": 1}


class Collector(HTMLParser):
    """Collects tags with their attributes and the section each is in (``grid_of``: the grid block
    each tag is in, parallel to ``tags``; ``text``: the text inside each grid block)."""

    def __init__(self):
        super().__init__()
        self.tags, self.section, self.grid_of, self.divs, self.text = [], None, [], [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs.get("id")
        if tag == "div":
            self.divs.append(attrs.get("id") if attrs.get("class") == "grid-block" else None)
        self.tags.append((tag, attrs, self.section))
        self.grid_of.append(self.grid)

    def handle_endtag(self, tag):
        if tag == "div" and self.divs:
            self.divs.pop()

    def handle_data(self, data):
        if self.grid:
            self.text[self.grid] = self.text.get(self.grid, "") + data + " "

    @property
    def grid(self):
        return next((d for d in reversed(self.divs) if d), None)


def render_and_parse(syn, out):
    """Aggregate a synthetic tree, render its report to ``out``; (html, Collector) of the page."""
    syn.aggregate()
    render_report(syn.config, syn.results_dir, out, provenance=PROVENANCE)
    html = out.read_text()
    parser = Collector()
    parser.feed(html)
    return html, parser


@pytest.fixture(scope="module")
def rendered(make_synthetic_results, tmp_path_factory):
    """(html, parsed tags, SyntheticResults) of the default synthetic report, rendered once per module."""
    syn = make_synthetic_results(tmp_path_factory.mktemp("report"))
    html, parser = render_and_parse(syn, syn.root / "report" / "index.html")
    return html, parser.tags, syn


def test_report_has_every_section(rendered):
    html, tags, syn = rendered
    sections = [a["id"] for t, a, _ in tags if t == "section"]
    assert sections[0] == "claims" and sections[-1] == "provenance"
    study_sections = sections[1:-1]
    assert len(study_sections) == len(syn.config["studies"]) == 2
    toc = [a["href"] for t, a, s in tags if t == "a" and s is None and a.get("href", "").startswith("#")]
    assert toc == [f"#{s}" for s in sections]
    for study in syn.config["studies"].values():
        assert study["title"] in html
    for heading in ("Claims overview", "Summary over seeds", "Published single runs vs our seeds", "Provenance",
                    "Training jobs"):
        assert heading in html


def test_figures_per_study_are_inline_pngs_with_alt_text(rendered):
    _, tags, _ = rendered
    imgs = [(a, s) for t, a, s in tags if t == "img"]
    per_section = {}
    for a, s in imgs:
        per_section[s] = per_section.get(s, 0) + 1
        assert a["src"].startswith("data:image/png;base64,")
        assert len(a.get("alt", "")) > 20
    assert list(per_section.values()) == [5, 5] and all(s.startswith("study-") for s in per_section)


def test_tables_claims_and_provenance(rendered):
    html, tags, syn = rendered
    tables = [(a.get("class"), s) for t, a, s in tags if t == "table"]
    for s in {s for _, s in tables if s and s.startswith("study-")}:
        assert {c for c, sec in tables if sec == s} == {"summary", "published"}
    assert ("claims-table", "claims") in tables and ("jobs", "provenance") in tables
    for variant in ("baseline", "bn_after", "bn_before", "overfit", "dropout_0.4"):
        assert f"<th scope=\"row\">{variant}</th>" in html
    for c in syn.config["claims"]:
        assert f'id="claim-{c["id"]}"' in html and c["text"] in html
    verdicts = re.findall(r'class="badge verdict-(\w+)"', html)
    assert set(verdicts) <= {"supported", "contradicted", "inconclusive"} and len(verdicts) >= 3 + 2 * 4
    for key in PROVENANCE:
        assert f"<dt>{key}</dt>" in html
    assert "2.6.6" in html and "testhost" in html  # per-job versions and host from meta.json
    jobs = html[html.index('<table class="jobs">'):]
    jobs = jobs[:jobs.index("</table>")]
    assert '<th scope="col">Engine</th>' in jobs and "<td>fused</td>" in jobs  # from meta.json
    assert "never 80%" in html.lower()


def test_report_is_self_contained(rendered):
    html, tags, _ = rendered
    assert not re.search(r"https?://", html)
    for tag, attrs, _ in tags:
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert value == "" or value.startswith(("data:", "#")), (tag, name, value)
    assert "<script" not in html and '<link rel="stylesheet"' not in html
    assert "<style>" in html and ".table-wrap" in html  # CSS inlined


EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def rendered_hostile(make_synthetic_results, tmp_path_factory):
    """A report with hostile study title, claim text and provenance, no published file, no provenance dict."""
    root = tmp_path_factory.mktemp("hostile")
    syn = make_synthetic_results(root, titles={"bn": f"BN {EVIL}"}, published=False, claims=[
        {"id": "x", "text": f"claim {EVIL} <img src=x onerror=alert(1)>", "study": "bn", "variant": "bn_after",
         "metric": "final_test_acc", "direction": "greater"}])
    syn.aggregate()
    out = root / "index.html"
    render_report(syn.config, syn.results_dir, out)
    return out.read_text()


def test_hostile_titles_and_claim_text_are_escaped(rendered_hostile):
    html = rendered_hostile
    assert EVIL not in html and "<img src=x" not in html
    assert "BN &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "claim &lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror=alert(1)&gt;" in html


def test_missing_published_file_and_provenance_are_skipped_gracefully(rendered_hostile):
    html = rendered_hostile
    assert "No published numbers available" in html and 'class="published"' not in html
    assert "No run provenance was given" in html
    assert html.count("<img ") == 10


def test_missing_aggregates_raise_results_error(synthetic_results, tmp_path):
    with pytest.raises(ResultsError, match="summary.csv"):
        render_report(synthetic_results.config, synthetic_results.results_dir, tmp_path / "index.html")
    assert not (tmp_path / "index.html").exists()


def test_render_writes_atomically(rendered):
    _, _, syn = rendered
    out_dir = syn.root / "report"
    assert [p.name for p in out_dir.iterdir()] == ["index.html"]


# --------------------------------------------------------------------------- grids, overrides, third party
@pytest.fixture(scope="module")
def rendered_grid(make_synthetic_results, tmp_path_factory):
    """(html, Collector, SyntheticResults) of the synthetic report with the ``bn_ext`` grid study."""
    syn = make_synthetic_results(tmp_path_factory.mktemp("grid"), grid=True)
    html, parser = render_and_parse(syn, syn.root / "index.html")
    return html, parser, syn


def _expected_best(syn, grid):
    """(variant, value, overlaps baseline) computed here from per_seed.csv with scipy, not with reglab."""
    per_seed = pd.read_csv(syn.results_dir / "aggregate" / "bn_ext" / "per_seed.csv")
    means = per_seed.groupby("variant")["final_test_acc"].mean()
    best = max(grid["variants"], key=lambda v: means[v])  # first of equal maxima, as the report
    value = grid["values"][grid["variants"].index(best)]

    def ci(v):
        x = per_seed.loc[per_seed["variant"] == v, "final_test_acc"].to_numpy(float)
        return st.t.interval(0.95, x.size - 1, loc=x.mean(), scale=x.std(ddof=1) / np.sqrt(x.size))

    (lo, hi), (blo, bhi) = ci(best), ci(grid["baseline"])
    return best, value, bool(lo <= bhi and blo <= hi), means[best] > means[grid["baseline"]]


def test_grid_blocks_are_in_their_study_section_and_the_toc(rendered_grid):
    html, parser, syn = rendered_grid
    grids = syn.config["studies"]["bn_ext"]["grids"]
    blocks = [(a["id"], s) for t, a, s in parser.tags if t == "div" and a.get("class") == "grid-block"]
    assert [s for _, s in blocks] == ["study-2-bn_ext"] * len(grids) == ["study-2-bn_ext"] * 2
    assert [b for b, _ in blocks] == [f"grid-2-bn_ext-{g['id']}" for g in grids]
    toc = [a["href"] for t, a, s in parser.tags if t == "a" and s is None and a.get("href", "").startswith("#")]
    sections = [a["id"] for t, a, _ in parser.tags if t == "section"]
    study_at = toc.index("#study-2-bn_ext")
    assert toc[study_at + 1:study_at + 3] == [f"#{b}" for b, _ in blocks]  # listed under their study
    assert [h for h in toc if not h.startswith("#grid-")] == [f"#{s}" for s in sections]
    for g in grids:
        assert f"<h3>Grid: {g['title']}</h3>" in html
        assert f'<a href="#grid-2-bn_ext-{g["id"]}">Grid: {g["title"]}</a>' in html


def test_grid_figure_and_best_value_table(rendered_grid):
    html, parser, syn = rendered_grid
    imgs = {}
    for (t, a, s), g in zip(parser.tags, parser.grid_of):
        if t == "img":
            imgs.setdefault(s, []).append(g)
    assert [len(v) for v in imgs.values()] == [5, 5, 7]  # bn_ext: five study figures plus one per grid
    assert [g for g in imgs["study-2-bn_ext"] if g] == ["grid-2-bn_ext-momentum", "grid-2-bn_ext-input_noise"]
    for grid in syn.config["studies"]["bn_ext"]["grids"]:
        block = f"grid-2-bn_ext-{grid['id']}"
        img = [a for (t, a, _), g in zip(parser.tags, parser.grid_of) if t == "img" and g == block][0]
        assert img["src"].startswith("data:image/png;base64,") and grid["param"] in img["alt"]
        tables = [a.get("class") for (t, a, _), g in zip(parser.tags, parser.grid_of) if t == "table" and g == block]
        assert tables == ["grid-best"]
        best, value, overlaps, higher = _expected_best(syn, grid)
        text = " ".join(parser.text[block].split())
        assert f"Best {grid['param']}: {value:g} (variant {best})" in text
        assert f"Best value {best} {value:g} 5 " in text  # the table's best row: point, variant, value, n
        expected = "yes" if overlaps else f"no ({'higher' if higher else 'lower'})"
        row = re.search(r"<tr><th scope=\"row\">Best value</th>(.*?)</tr>", html[html.index(f'id="{block}"'):]).group(1)
        assert row.endswith(f"<td>{expected}</td>") and f"<td>{best}</td>" in row
        assert f"Baseline ({grid['baseline']}): " in text
    # the synthetic momentum grid is built so that 0.9 wins clearly over the baseline
    assert _expected_best(syn, syn.config["studies"]["bn_ext"]["grids"][0])[:3] == ("bn_momentum_0.9", 0.9, False)
    assert "Symmetric-log x axis" in parser.text["grid-2-bn_ext-input_noise"]
    assert "Symmetric-log x axis" not in parser.text["grid-2-bn_ext-momentum"]


def test_variant_list_shows_training_overrides_and_grid_points(rendered_grid):
    html, _, _ = rendered_grid
    items = dict(re.findall(r"<li><code>([^<]+)</code>: (.*?)</li>", html[html.index('id="study-2-bn_ext"'):], re.S))
    assert "training override: <code>label_flip=0.1</code>" in items["label_flip_0.1"]
    assert "training override: <code>gradient_noise(eta=0.01, gamma=0.55)</code>" in items["grad_noise_0.01"]
    assert all("training override" not in text for v, text in items.items() if v not in GRID_OVERRIDES)
    assert "grid momentum: momentum = 0.9" in items["bn_momentum_0.9"]
    assert "grid input_noise: stddev = 0.01" in items["noise_0.01"]  # the explicit variant is also a grid point
    assert len(items) == len(set(items)) == 17


GRID_OVERRIDES = ("label_flip_0.1", "grad_noise_0.01")


def test_third_party_numbers_in_the_ext_study_only(rendered_grid):
    html, parser, _ = rendered_grid
    ext = html[html.index('id="study-2-bn_ext"'):html.index('id="provenance"')]
    rows = re.findall(r'<tr class="third-party"><th scope="row">([^<]+)</th><td>(\w+)</td><td>([^<]+)</td>', ext)
    assert [(v, split) for v, split, _ in rows] == [(v, s) for v in ("bn_after", "bn_no_affine", "bn_input")
                                                    for s in ("train", "test")]
    sources = {v: src for v, _, src in rows}
    assert sources["bn_after"] == "third party, mean of 3 runs"
    assert sources["bn_no_affine"] == "third party, mean of 3 runs (their bn_no_beta_gamma)"
    assert sources["bn_input"] == "third party, mean of 3 runs (their bn_input_and_after)"
    assert "reference only" in ext and "bn_no_momentum" not in ext
    assert html.count('class="third-party"') == len(rows)  # not in study bn (the key itself, without _ext)
    assert ("published", "study-2-bn_ext") in [(a.get("class"), s) for t, a, s in parser.tags if t == "table"]


def test_grid_points_and_best_value_edge_cases():
    per_seed = pd.DataFrame({
        "variant": ["a_1"] * 3 + ["a_2"] * 3 + ["a_3"] + ["base"] * 3,
        "final_test_acc": [0.8, 0.82, 0.84, 0.8, 0.82, 0.84, 0.95, 0.5, 0.52, 0.54],
        "peak_test_acc": [0.9] * 10,
    })
    grid = {"id": "a", "base": "a_1", "param": "label_flip", "values": [1, 2, 3, 4],
            "variants": ["a_1", "a_2", "a_3", "a_4"], "baseline": "base"}
    points = grid_points(per_seed, grid)
    final = points[points["metric"] == "final_test_acc"].set_index("variant")
    assert list(final.index) == ["a_1", "a_2", "a_3", "a_4", "base"]
    assert list(final["n"]) == [3, 3, 1, 0, 3] and np.isnan(final.loc["a_4", "mean"])
    lo, hi = st.t.interval(0.95, 2, loc=0.82, scale=0.02 / np.sqrt(3))
    assert np.allclose(final.loc["a_1", ["mean", "ci_low", "ci_high"]].to_numpy(float), [0.82, lo, hi])
    best = best_grid_point(points)  # a_3 has the highest mean but one seed: its interval is undefined
    assert (best["variant"], best["value"], best["overlap"], best["side"]) == ("a_3", 3, None, None)
    two = best_grid_point(grid_points(per_seed[per_seed["variant"] != "a_3"], grid))
    assert (two["variant"], two["ties"], two["overlap"], two["side"]) == ("a_1", [2.0], False, "higher")
    no_base = best_grid_point(grid_points(per_seed, {**grid, "baseline": None}))
    assert no_base["baseline"] is None and no_base["overlap"] is None
    assert best_grid_point(grid_points(per_seed.iloc[:0], grid)) is None


def test_grid_points_runs_are_read_from_their_pack(rendered_grid):
    html, _, syn = rendered_grid
    runs = syn.results_dir / "runs" / "bn_ext"
    assert (runs / "momentum" / "chunk1" / "bn_momentum_0.9" / "boundary.npz").is_file()  # the synthetic pack layout
    variants = ["baseline", "bn_momentum_0.9", "noise_0.01", "noise_0.5"]
    boundaries = load_boundaries(syn.results_dir, "bn_ext", variants)
    assert list(boundaries) == variants and all(b[3] == 5 for b in boundaries.values())
    metas = load_metas(syn.results_dir, "bn_ext", variants)
    assert [(m["variant"], m["chunk"]) for m in metas] == [(v, k) for v in variants for k in (0, 1)]
    assert html.count("<td>bn_momentum_0.9</td><td>0</td>") == 1  # its job in the provenance table


def test_grid_view_sentence_names_ties_and_undefined_overlap():
    per_seed = pd.DataFrame({"variant": ["f_0.0"] * 3 + ["f_0.3"] * 3 + ["f_0.1"] * 3 + ["base"],
                             "final_test_acc": [0.8, 0.82, 0.84] * 2 + [0.7, 0.72, 0.74, 0.5],
                             "peak_test_acc": [0.9] * 10})
    study = {"variants": {"base": [DENSE], "f_0.0": [DENSE], "f_0.1": [DENSE], "f_0.3": [DENSE]}}
    grid = {"id": "f", "base": "base", "param": "label_flip", "values": [0.0, 0.1, 0.3],
            "variants": ["f_0.0", "f_0.1", "f_0.3"], "baseline": "base"}
    view = grid_view(0, "s", study, grid, per_seed, {})
    assert view["sentence"].startswith("Best label_flip: 0 (variant f_0.0; tied with 0.3), mean final test accuracy "
                                       "0.820 (95% CI 0.770\u20130.870, n = 3). Baseline (base): 0.500 (n = 1).")
    assert "cannot be judged" in view["sentence"] and view["table"]["rows"][0][-1] == "undefined"
    assert view["figure"]["src"].startswith("data:image/png;base64,") and "label_flip (0, 0.1, 0.3)" in view["figure"]["alt"]


DENSE = {"dense": {"units": 1, "activation": "sigmoid"}}


# --------------------------------------------------------------------------- crowded studies
EXPLICIT = ["baseline", "bn_after", "bn_no_affine", "bn_input", "noise_0.01", "label_flip_0.1", "grad_noise_0.01"]


def test_figure_variants_of_the_synthetic_grid_study(rendered_grid):
    _, _, syn = rendered_grid
    study = syn.config["studies"]["bn_ext"]
    assert figure_variants(study) == EXPLICIT  # noise_0.01 is a grid point too, but the grid's base
    grid_only = grid_only_variants(study)
    assert len(grid_only) == 10 and "noise_0.01" not in grid_only and "bn_momentum_0.9" in grid_only
    assert set(figure_variants(study)) | grid_only == set(study["variants"])
    for name in ("bn", "drop"):  # without grids every variant is drawn
        assert figure_variants(syn.config["studies"][name]) == list(syn.config["studies"][name]["variants"])


def test_figure_variants_of_the_shipped_config():
    config = validate_config(load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml"))
    studies = config["studies"]
    assert len(studies["dropout_ext"]["variants"]) == 24 and len(studies["noise_ext"]["variants"]) == 39
    # dropout_0.4 is written explicitly and is also the grid point 0.4 (and the grid's base): explicit
    assert figure_variants(studies["dropout_ext"]) == ["overfit", "dropout_0.4", "input_dropout_0.2",
                                                      "dropout_0.4_maxnorm_3"]
    assert figure_variants(studies["noise_ext"]) == ["overfit", "input_0.01", "hidden_pre_0.1", "input_and_hidden",
                                                    "weight_noise_0.05", "gradient_noise_0.01", "label_flip_0.1"]
    for study in studies.values():
        assert len(figure_variants(study)) <= len(plots.OKABE_ITO)  # distinct colours in every figure


def test_figure_variants_rule_bases_and_baselines_of_other_grids():
    """A base or baseline that is a point of another grid is drawn; other points are not."""
    study = {"variants": {v: [DENSE] for v in ("a", "b", "a_1", "a_2", "b_1", "b_2")},
             "grids": [{"id": "g", "base": "a", "values": [1, 2], "variants": ["a_1", "a_2"], "baseline": "b"},
                       {"id": "h", "base": "a_1", "values": [1, 2], "variants": ["b_1", "b_2"], "baseline": "a_2"}]}
    assert figure_variants(study) == ["a", "b", "a_1", "a_2"]
    assert grid_only_variants(study) == {"b_1", "b_2"}
    no_baseline = {**study, "grids": [{**study["grids"][0], "baseline": None}]}
    assert figure_variants(no_baseline) == ["a", "b", "b_1", "b_2"]


def _study_images(parser, section):
    """alt texts of a study section's own figures (not the grid blocks')."""
    return [a["alt"] for (t, a, s), g in zip(parser.tags, parser.grid_of) if t == "img" and s == section and not g]


def test_grid_study_figures_show_explicit_variants_and_baselines_only(rendered_grid):
    html, parser, syn = rendered_grid
    study = syn.config["studies"]["bn_ext"]
    alts = _study_images(parser, "study-2-bn_ext")
    assert len(alts) == 5
    listed = re.search(r"for (.*)\.$", alts[1]).group(1).split(", ")  # the learning curves' alt lists its variants
    assert listed == EXPLICIT
    for alt in alts[1:]:  # (as whole words: noise_0.0 is a grid point, noise_0.01 is not)
        assert not set(re.findall(r"[\w.]*\w", alt)) & grid_only_variants(study), alt
        assert {"noise_0.01", "baseline"} <= set(re.findall(r"[\w.]*\w", alt))
    section = html[html.index('id="study-2-bn_ext"'):html.index('id="provenance"')]
    assert "The 10 other grid points are shown in the grid figures below" in section
    assert "other grid points" not in html[:html.index('id="study-2-bn_ext"')]  # studies without grids unchanged


def _tables_in(html, start, end=None):
    """(class, [row header]) of every table between two markers."""
    part = html[html.index(start):html.index(end) if end else None]
    return [(cls, re.findall(r'<tr><th scope="row">([^<]+)</th>', body))
            for cls, body in re.findall(r'<table class="([^"]*)">(.*?)</table>', part, re.S)]


def test_summary_groups_grid_points_under_details(rendered_grid):
    html, _, syn = rendered_grid
    study = syn.config["studies"]["bn_ext"]
    tables = dict(_tables_in(html, 'id="study-2-bn_ext"', 'id="provenance"'))
    assert tables["summary"] == EXPLICIT
    points = [v for v in study["variants"] if v in grid_only_variants(study)]
    assert tables["summary grid-points"] == points and len(points) == 10  # every variant kept, once
    block = re.search(r'<details class="grid-points"><summary>Grid points \((\d+)\)</summary>(.*?)</details>',
                      html, re.S)
    assert block.group(1) == "10" and '<table class="summary grid-points">' in block.group(2)
    assert html.count('<details class="grid-points">') == 1  # none in the studies without grids
    assert "Grid points are listed under" in html[html.index('id="study-2-bn_ext"'):]


def test_variant_colours_agree_across_the_figures_of_a_grid_study(synthetic_grid_aggregated, tmp_path, monkeypatch):
    seen = []

    def spy(name):
        real = getattr(plots, name)

        def wrapper(*args, **kwargs):
            seen.append((name, args, kwargs))
            return real(*args, **kwargs)
        monkeypatch.setattr(plots, name, wrapper)

    for name in ("fig_learning_curves", "fig_small_multiples", "fig_final_distribution", "fig_grid"):
        spy(name)
    syn = synthetic_grid_aggregated
    render_report({**syn.config, "studies": {"bn_ext": syn.config["studies"]["bn_ext"]}, "claims": []},
                  syn.results_dir, tmp_path / "index.html")
    per_variant = [(args[1], args[2]) for name, args, _ in seen if name != "fig_grid"]
    assert len(per_variant) == 3
    variants, colors = per_variant[0]
    assert variants == EXPLICIT and all(v == variants and c == colors for v, c in per_variant)
    assert len({colors[v] for v in variants}) == len(variants)  # distinct while there are enough colours
    grid_colors = [kw["color"] for name, _, kw in seen if name == "fig_grid"]
    assert grid_colors == [colors[g["base"]] for g in syn.config["studies"]["bn_ext"]["grids"]]


# --------------------------------------------------------------------------- diverged seeds
def test_summary_n_counts_diverged_seeds(rendered):
    _, _, syn = rendered
    summary = pd.read_csv(syn.results_dir / "aggregate" / "bn" / "summary.csv")
    assert [r[1] for r in summary_table(summary)["rows"]] == ["5", "5", "5"]
    summary["n"] = [5, 4, 5]
    summary["diverged"] = [0, 1, 0]
    assert [r[1] for r in summary_table(summary)["rows"]] == ["5", "4 (+1 diverged)", "5"]


def test_boundaries_leave_out_diverged_seeds(make_synthetic_results, tmp_path):
    syn = make_synthetic_results(tmp_path, diverged={("bn", "bn_after", 4): 10,  # seed 4: chunk 1
                                                     **{("bn", "bn_before", s): 3 for s in range(5)}})
    runs = syn.results_dir / "runs" / "bn"
    final = pd.read_csv(runs / "bn_after" / "chunk1" / "bn_after" / "final.csv")
    assert list(final["diverged_epoch"]) == [0, 10] and final["test_acc"].isna().tolist() == [False, True]
    b = load_boundaries(syn.results_dir, "bn", ["baseline", "bn_after", "bn_before"])
    assert [b[v][3:] for v in b] == [(5, 0), (4, 1), (0, 5)]
    probs = np.concatenate([np.load(d / "bn_after" / "boundary.npz")["prob"]
                            for d in sorted(runs.glob("bn_after/chunk*"))])
    assert np.isfinite(b["bn_after"][2]).all() and np.allclose(b["bn_after"][2], probs[:4].mean(axis=0))
    assert np.isnan(b["bn_before"][2]).all()


def _diverge_aggregates(syn):
    """Make the aggregated synthetic ``bn`` study look as if seeds had diverged, without aggregate.py:
    bn_after lost seed 4 (n 4, diverged 1, NaN boundary); every seed of bn_before diverged at epoch 21."""
    agg = syn.results_dir / "aggregate" / "bn"
    summary = pd.read_csv(agg / "summary.csv")
    summary["diverged"] = [0, 1, 5]
    summary["n"] = [5, 4, 0]
    summary.to_csv(agg / "summary.csv", index=False)
    curves = pd.read_csv(agg / "curves.csv")
    late = (curves["variant"] == "bn_before") & (curves["epoch"] > 20)
    curves.loc[late, [c for c in curves.columns if c.endswith(("_mean", "_std"))]] = np.nan
    curves.to_csv(agg / "curves.csv", index=False)
    for variant, seeds in (("bn_after", [1]), ("bn_before", [0, 1])):  # chunk1 holds seeds 3 and 4
        path = syn.results_dir / "runs" / "bn" / variant / "chunk1" / variant / "boundary.npz"
        npz = dict(np.load(path))
        npz["prob"][seeds] = np.nan
        np.savez_compressed(path, **npz)


def test_report_renders_diverged_seeds(make_synthetic_results, tmp_path):
    syn = make_synthetic_results(tmp_path)
    syn.aggregate()
    _diverge_aggregates(syn)
    out = tmp_path / "index.html"
    render_report(syn.config, syn.results_dir, out)
    html = out.read_text()
    bn = html[html.index('id="study-0-bn"'):html.index('id="study-1-drop"')]
    assert '<th scope="row">bn_after</th><td>4 (+1 diverged)</td>' in bn
    assert '<th scope="row">baseline</th><td>5</td>' in bn
    assert "left out of every mean" in bn and "diverged" not in html[html.index('id="study-1-drop"'):]
    assert html.count("<img ") == 10


def _rows_by_header(html: str, label: str) -> list[dict[str, str]]:
    """Every table row headed ``<th scope="row">label</th>``: {column header: cell text, tags stripped}."""
    text = lambda cell: re.sub(r"<[^>]+>", "", cell).strip()  # noqa: E731
    out = []
    for table in re.findall(r"<table\b.*?</table>", html, re.S):
        headers = [text(h) for h in re.findall(r'<th scope="col">(.*?)</th>', table, re.S)]
        for row in re.findall(rf'<tr>\s*<th scope="row">{re.escape(label)}</th>(.*?)</tr>', table, re.S):
            out.append(dict(zip(headers[1:], [text(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)])))
    return out


def test_report_with_a_diverged_seed_end_to_end(make_synthetic_results, tmp_path):
    """One diverged seed through aggregate.py and the report: counted, and left out of every mean.

    The expected numbers come straight from the run files of the seeds that did not diverge (their
    final.csv rows with diverged_epoch 0 and their history.csv), never from reglab's own code. Seed 4
    of bn_after reached 80% at epoch 6 before diverging at epoch 10 (the others at epoch 5), so a mean
    that let it in would show."""
    syn = make_synthetic_results(tmp_path, diverged={("bn", "bn_after", 4): 10})
    syn.aggregate()  # must accept NaN metrics of a diverged seed: an error here fails the test
    runs = sorted((syn.results_dir / "runs" / "bn" / "bn_after").glob("chunk*/bn_after"))
    final = pd.concat([pd.read_csv(d / "final.csv") for d in runs])
    hist = pd.concat([pd.read_csv(d / "history.csv") for d in runs])
    ok = final[final["diverged_epoch"] == 0]
    assert sorted(final["seed"]) == [0, 1, 2, 3, 4] and sorted(ok["seed"]) == [0, 1, 2, 3]
    test_acc, train_acc = ok["test_acc"].to_numpy(float), ok["train_acc"].to_numpy(float)
    acc = hist.pivot(index="seed", columns="epoch", values="test_acc")
    first_80 = {s: int(row.index[(row >= 0.8 - 1e-6).to_numpy()][0]) for s, row in acc.iterrows()}  # all reach it
    to_80 = np.array([first_80[s] for s in ok["seed"]], float)
    peak = acc.loc[ok["seed"]].max(axis=1).to_numpy(float)
    assert first_80[4] not in set(to_80)  # the diverged seed's history differs: letting it in would show

    summary = pd.read_csv(syn.results_dir / "aggregate" / "bn" / "summary.csv").set_index("variant")
    row = summary.loc["bn_after"]
    assert (row["n"], row["diverged"]) == (4, 1)
    # seeds that never reached 80%: none of the 4 (counted as never, the diverged seed would make it 1)
    never = row["epochs_to_80_never"] if "epochs_to_80_never" in row else row["never_80"]
    assert never == 0
    assert row["final_test_acc_mean"] == pytest.approx(test_acc.mean())
    assert row["final_test_acc_std"] == pytest.approx(test_acc.std(ddof=1))
    assert (row["final_test_acc_min"], row["final_test_acc_max"]) == pytest.approx((test_acc.min(), test_acc.max()))
    assert row["final_train_acc_mean"] == pytest.approx(train_acc.mean())
    assert row["epochs_to_80_mean"] == pytest.approx(to_80.mean())
    assert row["peak_test_acc_mean"] == pytest.approx(peak.mean())
    assert summary.loc["baseline", "n"] == 5 and summary.loc["baseline", "diverged"] == 0

    out = tmp_path / "index.html"
    render_report(syn.config, syn.results_dir, out)
    html = out.read_text()
    pm = lambda x: f"{x.mean():.3f} \u00b1 {x.std(ddof=1):.3f}"  # noqa: E731  (the report's "mean ± std")
    span = lambda x: f"{x.min():.3f}\u2013{x.max():.3f}"  # noqa: E731  (its "min–max")
    half = st.t.ppf(0.975, test_acc.size - 1) * test_acc.std(ddof=1) / np.sqrt(test_acc.size)
    rows = _rows_by_header(html, "bn_after")
    (table,) = [r for r in rows if "Final test acc" in r]  # the summary table
    assert table["n"] == "4 (+1 diverged)"
    assert (table["Final train acc"], table["Final test acc"]) == (pm(train_acc), pm(test_acc))
    assert table["Test acc 95% CI"] == f"{test_acc.mean() - half:.3f}\u2013{test_acc.mean() + half:.3f}"  # t interval
    assert (table["Test min\u2013max"], table["Train min\u2013max"]) == (span(test_acc), span(train_acc))
    assert table["Epochs to 80%"] == f"{to_80.mean():.1f} \u00b1 {to_80.std(ddof=1):.1f}"
    assert (table["Never 80%"], table["Peak test acc"]) == ("0 / 4", pm(peak))
    published = {r["Split"]: r for r in rows if "Split" in r}  # published single runs beside our seeds
    for split, ours in (("train", train_acc), ("test", test_acc)):
        assert (published[split]["Ours mean \u00b1 std"], published[split]["Ours min\u2013max"],
                published[split]["n"]) == (pm(ours), span(ours), "4")
    # the claim on epochs_to_80 counts 4 seeds of bn_after, none of them "never" (the diverged one is out)
    assert (f"bn_after: median {np.median(to_80):.1f}, mean {to_80.mean():.1f} \u00b1 {to_80.std(ddof=1):.1f}, "
            f"n = 4, never 0") in html
    assert html.count("<img ") == 10


# --------------------------------------------------------------------------- image and sequence data
KIND_CLAIM = {"id": "img_dropout", "text": "Dropout helps on images.", "study": "img", "variant": "dropout_0.5",
              "compare_to": "baseline", "metric": "final_test_acc", "direction": "greater", "threshold": 0,
              "alpha": 0.05}


@pytest.fixture(scope="module")
def rendered_kinds(make_synthetic_results, tmp_path_factory):
    """(html, Collector, SyntheticResults) with the image (``img``, 4 classes) and sequence (``seq``) studies."""
    root = tmp_path_factory.mktemp("kinds")
    syn = make_synthetic_results(root, images=True, sequences=True)
    syn.config["claims"] = [*syn.config["claims"], KIND_CLAIM]
    html, parser = render_and_parse(syn, root / "index.html")
    return html, parser, syn


def _section(html, sid):
    """The HTML of one section, up to the next."""
    start = html.index(f'<section id="{sid}"')
    return html[start:html.index("<section ", start + 1)]


def _figure_kinds(parser):
    """section id -> the classes of its <figure>s (grid blocks' figures have none)."""
    out = {}
    for t, a, s in parser.tags:
        if t == "figure":
            out.setdefault(s, []).append(a.get("class"))
    return out


def test_dataset_figure_suits_images_and_sequences(rendered_kinds):
    html, parser, _ = rendered_kinds
    kinds = _figure_kinds(parser)
    assert list(kinds) == ["study-0-bn", "study-1-drop", "study-2-img", "study-3-seq"]
    assert [k[0] for k in kinds.values()] == ["figure-dataset-points", "figure-dataset-points",
                                              "figure-dataset-images", "figure-dataset-sequences"]
    img, seq = _section(html, "study-2-img"), _section(html, "study-3-seq")
    assert "<figcaption>blocks_6x6: 40 training images (6x6), 60 test; 4 classes." in img
    assert "<figcaption>waves_12: 30 training sequences (length 12), 50 test; 2 classes." in seq
    alts = {s: [a["alt"] for t, a, sec in parser.tags if t == "img" and sec == s] for s in kinds}
    assert alts["study-2-img"][0].startswith("Example training images of the blocks_6x6 dataset (6\u00d76, 4 classes)")
    assert "one colour per class (2 classes)" in alts["study-3-seq"][0]
    assert alts["study-0-bn"][0] == "Scatter plot of the circles_a dataset: train and test points of 2 classes."


def test_studies_without_boundaries_have_no_boundary_block(rendered_kinds):
    html, parser, syn = rendered_kinds
    assert not list((syn.results_dir / "runs" / "img").rglob("boundary.npz"))  # as the engine: none written
    kinds = _figure_kinds(parser)
    for sid in ("study-2-img", "study-3-seq"):
        assert kinds[sid] == [kinds[sid][0], "figure-curves", "figure-small-multiples", "figure-final"]
        section = _section(html, sid)
        assert "boundar" not in section.lower() and "class 1" not in section  # no figure, no note, no P(class 1)
        assert section.count("<img ") == 4 and 'src=""' not in section
    for sid in ("study-0-bn", "study-1-drop"):  # the 2-D studies keep theirs
        assert kinds[sid][-1] == "figure-boundaries"
        assert "No decision-boundary data" not in _section(html, sid)
    toc = [a["href"] for t, a, s in parser.tags if t == "a" and s is None and a.get("href", "").startswith("#")]
    assert toc == ["#claims", "#study-0-bn", "#study-1-drop", "#study-2-img", "#study-3-seq", "#provenance"]


def test_multiclass_study_summary_and_claims(rendered_kinds):
    html, _, _ = rendered_kinds
    tables = dict(_tables_in(html, 'id="study-2-img"', 'id="study-3-seq"'))
    assert tables["summary"] == ["baseline", "dropout_0.5"]
    row = re.search(r'<tr><th scope="row">dropout_0.5</th>(.*?)</tr>', _section(html, "study-2-img")).group(1)
    assert "<td>5</td>" in row and "\u2013" not in re.findall(r"<td>([^<]*)</td>", row)  # no statistic left as a bare dash
    card = _section(html, "study-2-img")
    assert 'id="claim-img_dropout"' in card and "No claims concern this study" not in card
    assert re.search(r'id="claim-img_dropout">\s*<header><h4><span class="badge verdict-(supported|contradicted|'
                     r'inconclusive)"', html)
    assert "No published numbers for this study." in card  # published.yaml has none for it


def test_report_picks_the_dataset_figure_by_shape(make_synthetic_results, tmp_path, monkeypatch):
    called = []
    for name in ("fig_dataset_points", "fig_dataset_images", "fig_dataset_sequences", "fig_decision_boundaries"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda *a, _n=name, _r=real, **k: (called.append(_n), _r(*a, **k))[1])
    syn = make_synthetic_results(tmp_path, images=True, sequences=True)
    syn.aggregate()
    config = {**syn.config, "claims": [], "studies": {k: syn.config["studies"][k] for k in ("seq", "bn", "img")}}
    render_report(config, syn.results_dir, tmp_path / "index.html")
    assert called == ["fig_dataset_sequences", "fig_dataset_points", "fig_decision_boundaries", "fig_dataset_images"]


def test_2d_study_without_boundary_files_says_so(make_synthetic_results, tmp_path):
    syn = make_synthetic_results(tmp_path)
    syn.aggregate()
    for f in (syn.results_dir / "runs" / "drop").rglob("boundary.npz"):
        f.unlink()
    render_report(syn.config, syn.results_dir, tmp_path / "index.html")
    html = (tmp_path / "index.html").read_text()
    drop = _section(html, "study-1-drop")
    assert "figure-boundaries" not in drop and drop.count("<img ") == 4
    assert "No decision-boundary data (boundary.npz) was found" in drop
    assert "figure-boundaries" in _section(html, "study-0-bn")


def test_studies_drawn_by_several_processes_give_the_same_page(rendered, tmp_path):
    """``workers`` only spreads the studies' figures over processes: the page is the one drawn by one
    process, byte for byte, but for the time it was generated."""
    html, _, syn = rendered
    assert len(syn.config["studies"]) > 1
    out = tmp_path / "parallel.html"
    render_report(syn.config, syn.results_dir, out, provenance=PROVENANCE, workers=2)
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")
    assert stamp.sub("", out.read_text()) == stamp.sub("", html)
