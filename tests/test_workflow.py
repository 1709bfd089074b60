"""End-to-end: the Snakemake workflow on the tiny config (slow), and its planning (fast)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from reglab.config import validate_config
from test_plan_summary import PLAN, listed_train_jobs
from workdirs import make_workdir, read_without_timing  # tests/workdirs.py

REPO = Path(__file__).resolve().parents[1]




def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", "config/tiny.yaml", *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def tiny_config() -> dict:
    return yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())


def copy_finished_run(finished: Path, work: Path) -> None:
    """Copy a finished run's results, Snakemake metadata and report into the workdir ``work``."""
    shutil.copytree(finished / "results", work / "results")
    shutil.copytree(finished / ".snakemake", work / ".snakemake", symlinks=True)
    shutil.copytree(finished / "report", work / "report")


def planned_train_jobs(workdir: Path) -> set[str]:
    """The run directories a dry run would (re)train."""
    out = snakemake(workdir, "-n").stdout
    return {
        line.split("output: ")[1].strip()
        for line in out.splitlines()
        if line.strip().startswith("output: results/runs/")
    }



def test_default_config_plans_every_study(tmp_path):
    work = make_workdir(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "4"], cwd=work, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the default config packs each study's single variants into one job (pack_variants)
    for study in ("batchnorm", "dropout", "noise"):
        assert f"results/runs/{study}/variants--all/chunk0" in proc.stdout
    assert "results/runs/dropout/dropout_0.4--sources/chunk0" in proc.stdout
    # each training job waits for the compiled loops of its models' fused families only, each
    # compiled once by its own job
    inputs = {}
    for block in proc.stdout.split("rule ")[1:]:
        fields = dict(line.strip().split(": ", 1) for line in block.splitlines()[1:] if ": " in line)
        if block.startswith("train:"):
            inputs[fields["output"]] = fields["input"].split(", ")
    kernels = {out: sorted(i for i in ins if i.startswith("results/kernels/")) for out, ins in inputs.items()}
    assert kernels["results/runs/rnn/variants--all/chunk0"] == ["results/kernels/lstm.json"]
    assert kernels["results/runs/dropout/variants--all/chunk0"] == ["results/kernels/dense.json"]
    assert kernels["results/runs/cnn/variants--all/chunk0"] == []  # convolutions: autograd
    assert proc.stdout.count("rule fused_kernels:") == 2


def test_bad_config_stops_before_any_job_with_the_key_path(tmp_path):
    config = tiny_config()
    config["studies"]["dropout"]["variants"]["dropout_0.4"][2]["dropout"]["rate"] = 1.5
    work = make_workdir(tmp_path, config)
    proc = snakemake(work, "--cores", "2", check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "studies.dropout.variants.dropout_0.4[2].dropout.rate" in message
    assert "Traceback" not in message
    assert not (work / "results").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny config run once to completion."""
    work = make_workdir(tmp_path_factory.mktemp("run1"))
    snakemake(work, "--cores", "2")
    return work


@pytest.mark.slow
def test_tiny_run_produces_results_and_report(tiny_run):
    report = tiny_run / "report" / "index.html"
    assert report.is_file() and report.stat().st_size > 10_000
    config = validate_config(tiny_config())  # grids expanded
    for study, spec in config["studies"].items():
        seeds = spec.get("seeds", config["seeds"])
        per_seed = pd.read_csv(tiny_run / "results" / "aggregate" / study / "per_seed.csv")
        assert len(per_seed) == seeds * len(spec["variants"])
        for variant in spec["variants"]:
            finals = pd.concat(pd.read_csv(p) for p in (tiny_run / "results/runs" / study).glob(f"*/chunk*/{variant}/final.csv"))
            assert sorted(finals["seed"]) == list(range(seeds))
            assert finals["test_acc"].between(0, 1).all()
    html = report.read_text()
    for study in config["studies"]:
        assert config["studies"][study]["title"] in html


@pytest.mark.slow
def test_complete_run_leaves_nothing_to_do(tiny_run):
    out = snakemake(tiny_run, "-n")
    assert "Nothing to be done" in out.stdout + out.stderr


@pytest.mark.slow
def test_same_command_gives_identical_metrics(tiny_run, tmp_path):
    second = make_workdir(tmp_path / "run2")
    snakemake(second, "--cores", "2")
    # every metric file; runtime.csv holds only measurements of time and memory
    files = sorted(p.relative_to(tiny_run) for p in (tiny_run / "results").rglob("*.csv") if p.name != "runtime.csv")
    assert len(files) >= 10
    for rel in files:
        a, b = read_without_timing(tiny_run / rel), read_without_timing(second / rel)
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=str(rel))


@pytest.mark.slow
def test_edits_rerun_only_what_depends_on_them(tiny_run, tmp_path):
    work = make_workdir(tmp_path / "edit")
    copy_finished_run(tiny_run, work)
    assert planned_train_jobs(work) == set()

    config = tiny_config()
    config["studies"]["dropout"]["variants"]["dropout_0.4"][2]["dropout"]["rate"] = 0.5
    (work / "config" / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert planned_train_jobs(work) == {"results/runs/dropout/dropout_0.4/chunk0", "results/runs/dropout/dropout_0.4/chunk1"}

    config = tiny_config()
    config["studies"]["batchnorm"]["training"]["epochs"] = 7
    (work / "config" / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert planned_train_jobs(work) == {
        f"results/runs/batchnorm/{v}/chunk{c}" for v in ("baseline", "bn_after") for c in (0, 1)
    }


@pytest.mark.slow
def test_snakemake_report_packages_the_html_report(tiny_run):
    snakemake(tiny_run, "--report", "report/snakemake.zip")
    import zipfile

    with zipfile.ZipFile(tiny_run / "report" / "snakemake.zip") as zf:
        names = zf.namelist()
        page = zf.read("snakemake/report.html").decode()
        files = {name: zf.read(name) for name in names if name.startswith("snakemake/data/")}
    assert "snakemake/report.html" in names
    assert any(name.startswith("snakemake/data/") and name.endswith("/index.html") for name in names), names

    def page_json(name):  # the report page's `var <name> = {...};` script
        script = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', page, re.DOTALL)
        return json.loads(script.group(1))

    # every study's tables and figures, in the study's category, labelled, their bytes in the zip
    categories, results = page_json("categories"), page_json("results")
    for study in tiny_config()["studies"]:
        tables = {f"results/aggregate/{study}/{name}.csv": {"study": study, "table": f"{name}.csv"}
                  for name in ("finals", "per_seed", "curves", "summary", "runtime")}
        figures = {f"results/figures/{study}/{name}.png": {"study": study, "figure": name.replace("_", " ")}
                   for name in ("learning_curves", "final_accuracy")}
        assert sorted(categories[study]["Tables"]) == sorted(tables)
        assert sorted(categories[study]["Figures"]) == sorted(figures)
        for path, labels in {**tables, **figures}.items():
            assert results[path]["labels"] == labels
            assert files["snakemake/" + results[path]["data_uri"]] == (tiny_run / path).read_bytes(), path
        assert (tiny_run / f"results/figures/{study}/learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_dry_run_estimates_only_the_training_an_edit_reruns(tiny_run, tmp_path):
    work = make_workdir(tmp_path / "plan")
    copy_finished_run(tiny_run, work)
    config = tiny_config()
    config["studies"]["dropout"]["variants"]["dropout_0.4"][2]["dropout"]["rate"] = 0.5
    (work / "config" / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = snakemake(work, "-n").stdout
    jobs = listed_train_jobs(out)  # Snakemake's own listing of the jobs to run, with their resources
    assert len(jobs) == 2
    assert {tuple(map(int, line)) for line in PLAN.findall(out)} == {
        (2, sum(runtime * threads for runtime, threads in jobs), max(runtime for runtime, _ in jobs))}


@pytest.mark.slow
def test_a_config_over_200_kb_plans_and_no_command_line_carries_it(tmp_path):
    """Linux caps one argument at 128 KiB: the config reaches the steps through a file, never argv."""
    config = tiny_config()
    study = config["studies"]["dropout"]
    base = study["variants"]["dropout_0.4"]
    for i in range(300):  # distinct variants, about 200 bytes each
        layers = [dict(layer) for layer in base]
        layers[2] = {"dropout": {"rate": round(0.0001 + i / 10000, 4)}}
        study["variants"][f"wide_variant_with_a_long_name_{i:04d}"] = layers
    study["grids"] = [{"id": "rate", "base": "dropout_0.4", "layer": 2, "param": "rate",
                       "values": [round(0.5 + i / 10000, 4) for i in range(1000)]}]
    claim = {"study": "dropout", "variant": "dropout_0.4", "compare_to": "overfit", "metric": "final_test_acc",
             "direction": "greater"}
    config["claims"] += [{"id": f"claim_{i}", "text": f"claim {i}: " + "a long quotation " * 100, **claim}
                         for i in range(100)]
    work = make_workdir(tmp_path, config)
    assert (work / "config" / "tiny.yaml").stat().st_size > 200_000
    proc = snakemake(work, "-n", "-p", "--cores", "1")
    commands = [line for line in proc.stdout.splitlines() if "python -m reglab" in line]
    assert len(commands) > 600 and max(map(len, commands)) < 4_000
    snakemake(work, "--cores", "1", "results/config.json")
    written = (work / "results" / "config.json").read_text()
    assert len(written) > 200_000 and "wide_variant_with_a_long_name_0299" in written and "rate_0.5999" in written


@pytest.mark.slow
def test_packed_variants_train_exactly_as_a_job_each(tiny_run, tmp_path):
    """pack_variants only changes which process trains what: the batchnorm study's two variants (two
    models, one after another in each of the two chunks' jobs) give the per-seed results of the
    tiny run's job per variant, bit for bit."""
    config = tiny_config()
    config["pack_variants"] = True
    work = make_workdir(tmp_path, config)
    snakemake(work, "--cores", "2", "results/aggregate/batchnorm/per_seed.csv")
    jobs = sorted(p.name for p in (work / "results" / "runs" / "batchnorm").iterdir())
    assert jobs == ["variants--all"]
    assert sorted(p.name for p in (work / "results" / "runs" / "batchnorm" / "variants--all").iterdir()) == [
        "chunk0", "chunk1"]
    packed = read_without_timing(work / "results" / "aggregate" / "batchnorm" / "per_seed.csv")
    apart = read_without_timing(tiny_run / "results" / "aggregate" / "batchnorm" / "per_seed.csv")
    assert len(packed) == 2 * 3  # 2 variants x 3 seeds
    pd.testing.assert_frame_equal(packed, apart, check_exact=True)
