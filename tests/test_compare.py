"""Named runs (config's run_name) and ``python -m reglab compare A B`` (reglab.compare).

The compared results trees are built by hand in the documented formats (tests/conftest.py's synthetic
tree, aggregated, and per_seed.csv tables written directly); the workflow is only planned (dry runs)
or runs its config step, so nothing trains.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from conftest import write_synthetic_results
from reglab import contract
from reglab.aggregate import per_seed_columns
from reglab.cli import main
from reglab.config import spec_hash, validate_config
from test_workflow import snakemake, tiny_config  # the tests' way of running Snakemake on config/tiny.yaml
from workdirs import make_workdir

DELTA = 0.01


# --------------------------------------------------------------------------- building results trees
@pytest.fixture
def run_a(tmp_path) -> Path:
    """The synthetic results tree (2 studies, 5 variants, 5 seeds each), aggregated, with a config.json."""
    syn = write_synthetic_results(tmp_path / "a")
    syn.aggregate()
    contract.write_validated_config({**syn.config, "run_name": "desk"}, "hash-of-a", contract.config_path(syn.results_dir))
    return syn.results_dir


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_per_seed(results: Path, study: str, edit) -> None:
    """Rewrite one study's per_seed.csv through ``edit(frame) -> frame``."""
    path = Path(contract.aggregate_path(results, study, "per_seed"))
    frame = pd.read_csv(path, dtype={"study": str, "variant": str}, keep_default_na=False, na_values=[""])
    edit(frame).to_csv(path, index=False)


def shift(results: Path, study: str, variant: str, amount: float, column: str = "final_test_acc") -> None:
    def add(frame):
        frame.loc[frame["variant"] == variant, column] += amount
        return frame

    edit_per_seed(results, study, add)


def write_per_seed(results: Path, study: str, values: dict[str, np.ndarray]) -> None:
    """A per_seed.csv (the aggregate's columns) with these final test accuracies per variant."""
    rows = []
    for variant, accs in values.items():
        for seed, acc in enumerate(accs):
            row = dict.fromkeys(per_seed_columns(), np.nan)
            row.update(study=study, variant=variant, chunk=0, seed=seed, n_epochs=30, final_test_acc=acc,
                       diverged_epoch=0)
            rows.append(row)
    contract.write_csv(pd.DataFrame(rows, columns=list(per_seed_columns())), contract.aggregate_path(results, study, "per_seed"))


def compare(a: Path, b: Path, tmp_path: Path, *args: str) -> tuple[pd.DataFrame, str]:
    """Run the CLI; (its CSV table, its HTML page)."""
    out, csv = tmp_path / "compare.html", tmp_path / "compare.csv"
    assert main(["compare", str(a), str(b), "--out", str(out), "--csv", str(csv), *args]) == 0
    return pd.read_csv(csv, dtype={"study": str, "variant": str}), out.read_text(encoding="utf-8")


def values(results: Path, study: str, variant: str) -> np.ndarray:
    frame = pd.read_csv(contract.aggregate_path(results, study, "per_seed"), dtype={"variant": str})
    return frame.loc[frame["variant"] == variant, "final_test_acc"].to_numpy(dtype=float)


# --------------------------------------------------------------------------- compare
def test_a_shifted_variant_gets_the_difference_ci_and_tests_scipy_computes(run_a, tmp_path):
    run_b = copy_run(run_a, tmp_path / "b")
    shift(run_b, "bn", "baseline", 0.05)
    table, html = compare(run_a, run_b, tmp_path)
    a, b = values(run_a, "bn", "baseline"), values(run_b, "bn", "baseline")
    welch = st.ttest_ind(b, a, equal_var=False)
    ci = welch.confidence_interval(0.95)
    row = table.set_index(["study", "variant"]).loc[("bn", "baseline")]
    assert row["status"] == "both" and row["n_a"] == row["n_b"] == 5
    assert row["mean_a"] == pytest.approx(a.mean()) and row["std_b"] == pytest.approx(b.std(ddof=1))
    assert row["diff"] == pytest.approx(b.mean() - a.mean()) == pytest.approx(0.05)
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["welch_p"] == pytest.approx(welch.pvalue)
    assert row["mann_whitney_p"] == pytest.approx(st.mannwhitneyu(b, a, alternative="two-sided").pvalue)
    # Holm over the 5 compared variants: the other 4 are equal copies (p = 1), so this one is the smallest
    assert len(table) == 5 and row["welch_p_holm"] == pytest.approx(min(1.0, 5 * welch.pvalue))
    assert not row["identical"] and table.loc[table["variant"] != "baseline", "identical"].all()
    assert f"<td>0.0500 [{ci.low:.4f}, {ci.high:.4f}]</td>" in html


def test_tost_tells_a_shift_of_5_delta_from_one_of_a_tenth_delta(tmp_path):
    rng = np.random.default_rng(7)
    a_vals = {v: np.round(0.85 + rng.normal(0, 0.005, 200), 6) for v in ("far", "near")}
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    write_per_seed(run_a, "s", a_vals)
    write_per_seed(run_b, "s", {"far": a_vals["far"] + 5 * DELTA, "near": a_vals["near"] + 0.1 * DELTA})
    table, html = compare(run_a, run_b, tmp_path, "--delta", str(DELTA))
    verdict = dict(zip(table["variant"], table["verdict"]))
    assert verdict == {"far": "not shown equivalent", "near": f"the same within \u00b1{DELTA:g}"}
    assert table.set_index("variant").loc["near", "tost_p_holm"] < 0.05
    assert table.set_index("variant").loc["far", "diff"] == pytest.approx(5 * DELTA)
    assert "the same within \u00b11e-02" not in html and "the same within \u00b10.01" in html


def test_identical_runs_are_flagged_identical(run_a, tmp_path, capsys):
    same = copy_run(run_a, tmp_path / "same")
    shift(same, "bn", "bn_after", 0.25, column="fit_time_s")  # a wall time: differs between runs of one command
    table, html = compare(run_a, same, tmp_path)
    assert table["identical"].all() and len(table) == 5
    assert "identical per-seed values for all 5 variants" in html
    assert "5 with identical per-seed values" in capsys.readouterr().out
    nearly = copy_run(run_a, tmp_path / "nearly")
    shift(nearly, "drop", "overfit", 1e-12, column="final_train_acc")  # not the compared metric, still a difference
    table, html = compare(run_a, nearly, tmp_path)
    assert dict(zip(table["variant"], table["identical"])) == {
        "baseline": True, "bn_after": True, "bn_before": True, "overfit": False, "dropout_0.4": True}
    assert "for all 5 variants" not in html


def test_variants_and_studies_in_one_run_only_are_listed(run_a, tmp_path):
    run_b = copy_run(run_a, tmp_path / "b")
    edit_per_seed(run_b, "bn", lambda f: f[f["variant"] != "bn_before"])
    edit_per_seed(run_b, "bn", lambda f: pd.concat([f, f[f["variant"] == "baseline"].assign(variant="bn_new")]))
    shutil.rmtree(contract.aggregate_dir(run_b, "drop"))
    table, html = compare(run_a, run_b, tmp_path)
    status = dict(zip(table["variant"], table["status"]))
    assert status == {"baseline": "both", "bn_after": "both", "bn_before": "only in A", "bn_new": "only in B"}
    assert table.loc[table["status"] != "both", "verdict"].isna().all()
    assert "<li><code>bn_before</code>: only in A</li>" in html and "<li><code>bn_new</code>: only in B</li>" in html
    assert "<li><code>drop</code>: only in A</li>" in html


def test_the_page_escapes_a_hostile_variant_name(run_a, tmp_path):
    hostile = '<script>alert("x")</script>&<img src=x onerror=alert(1)>'
    run_b = copy_run(run_a, tmp_path / "b")
    for run in (run_a, run_b):
        edit_per_seed(run, "bn", lambda f: f.replace({"variant": {"baseline": hostile}}))
    edit_per_seed(run_b, "drop", lambda f: f.replace({"variant": {"overfit": hostile + "2"}}))
    table, html = compare(run_a, run_b, tmp_path)
    assert hostile in set(table["variant"]) and hostile + "2" in set(table["variant"])
    assert "<script>" not in html and "<img" not in html
    # in the compared row of bn and in the list of drop's variants only in B
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;&lt;img src=x onerror=alert(1)&gt;") == 2


@pytest.mark.parametrize("case", ["missing folder", "no aggregates", "per_seed without final_test_acc",
                                  "non-numeric accuracy"])
def test_a_missing_or_malformed_folder_is_one_line_and_exit_2(run_a, tmp_path, capsys, case):
    bad = tmp_path / "bad"
    if case == "missing folder":
        named = str(bad)
    elif case == "no aggregates":
        bad.mkdir()
        named = str(bad)
    else:
        copy_run(run_a, bad)
        named = contract.aggregate_path(bad, "drop", "per_seed")
        if case == "per_seed without final_test_acc":
            edit_per_seed(bad, "drop", lambda f: f.drop(columns="final_test_acc"))
        else:
            edit_per_seed(bad, "drop", lambda f: f.astype({"final_test_acc": object}).assign(final_test_acc="n/a"))
    out = tmp_path / "compare.html"
    assert main(["compare", str(run_a), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("python -m reglab compare: error: ")
    assert named in err and "Traceback" not in err
    assert not out.exists()


def test_the_header_shows_both_runs_provenance(run_a, tmp_path):
    run_b = copy_run(run_a, tmp_path / "b")
    for meta_path in Path(run_b, "runs").rglob(contract.META):
        meta = json.loads(meta_path.read_text())
        meta["versions"]["torch"] = "2.12.1"
        meta["code_hash"] = "feedfacefeedface"
        meta_path.write_text(json.dumps(meta))
    _, html = compare(run_a, run_b, tmp_path)
    provenance = html.split('id="provenance"')[1].split("</section>")[0]
    assert "hash-of-a" in provenance and "desk" in provenance
    torch = re.search(r"<tr class=\"differs\"><th scope=\"row\">torch</th>(.*?)</tr>", provenance)
    assert torch and "2.13.0" in torch.group(1) and "2.12.1" in torch.group(1)
    code = re.search(r"<tr class=\"differs\"><th scope=\"row\">code hash</th>(.*?)</tr>", provenance)
    assert code and "feedfacefeedface" in code.group(1)
    assert '<tr><th scope="row">hostname</th>' in provenance  # the same on both: not marked


# --------------------------------------------------------------------------- named runs
def planned_paths(stdout: str) -> set[str]:
    """Every output, log and benchmark path a dry run lists."""
    paths = set()
    for line in stdout.splitlines():
        m = re.match(r"\s+(output|log|benchmark): (.*)", line)
        if m:
            paths.update(p.strip() for p in m.group(2).split(", ") if p.strip())
    return paths


def test_a_named_run_plans_everything_under_runs_name(tmp_path):
    work = make_workdir(tmp_path / "w")
    named = planned_paths(snakemake(work, "-n", "--config", "run_name=x").stdout)
    plain = planned_paths(snakemake(work, "-n").stdout)
    assert {"runs/x/report/index.html", "runs/x/results/config.json"} <= named
    assert any(p.startswith("runs/x/logs/train/") for p in named)
    assert any(p.startswith("runs/x/benchmarks/train/") for p in named)
    assert all(p.startswith("runs/x/") for p in named), sorted(p for p in named if not p.startswith("runs/x/"))
    assert named == {f"runs/x/{p}" for p in plain}  # unnamed: the same paths, where they always were
    assert "report/index.html" in plain and not (work / "runs").exists()


def test_a_named_run_keeps_the_config_hash_of_its_config(tmp_path):
    work = make_workdir(tmp_path / "w")
    snakemake(work, "--cores", "1", "--config", "run_name=x", "--", "runs/x/results/config.json")
    named, named_hash = contract.read_validated_config(work / "runs/x/results/config.json")
    plain = {k: v for k, v in named.items() if k != "run_name"}
    assert named["run_name"] == "x" and plain == validate_config(tiny_config())
    assert named_hash == spec_hash(plain)  # what the unnamed run records (config.smk: the config's spec_hash)
    assert not (work / "results").exists()


def test_a_bad_run_name_is_refused_with_its_key_path(tmp_path):
    work = make_workdir(tmp_path / "w")
    proc = snakemake(work, "-n", "--config", "run_name=../x", check=False)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config error at run_name: '../x' does not match" in message
    assert "Traceback" not in message and not (work / "runs").exists() and not (tmp_path / "x").exists()
