"""The results contract: one atomic writer (fsync, rename, umask permissions), the layout, and the
metric registry that aggregation, statistics, the report and the config schema all read."""

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reglab import contract, report
from reglab.aggregate import aggregate_study
from reglab.contract import Column, Metric

REPO = Path(__file__).resolve().parents[1]


def write_job(run_dir: Path, final_test_acc: list[float]) -> Path:
    """A minimal valid run directory: 3 epochs, one seed per final accuracy."""
    run_dir.mkdir(parents=True)
    seeds = list(range(len(final_test_acc)))
    hist = [{"study": "s", "variant": "v", "seed": s, "epoch": e, "train_loss": 0.5, "train_acc": 0.7,
             "test_loss": 0.6, "test_acc": 0.6 + 0.1 * e, "epoch_time_s": 1.0} for e in (1, 2, 3) for s in seeds]
    final = [{"study": "s", "variant": "v", "seed": s, "train_loss": 0.4, "train_acc": 0.9, "test_loss": 0.5,
              "test_acc": a, "diverged_epoch": 0} for s, a in zip(seeds, final_test_acc)]
    pd.DataFrame(hist).to_csv(run_dir / contract.HISTORY, index=False)
    pd.DataFrame(final).to_csv(run_dir / contract.FINAL, index=False)
    meta = {"schema_version": contract.SCHEMA_VERSION, "study": "s", "variant": "v", "chunk": 0, "seeds": seeds,
            "fit_time_s": 6.0, "peak_rss_mb": 1.0, "threads": 1}
    (run_dir / contract.META).write_text(json.dumps(meta))
    return run_dir


# --------------------------------------------------------------------------- atomic writes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_get_the_permissions_of_any_new_file(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        contract.write_text("x\n", tmp_path / "a.txt")
        contract.write_csv(pd.DataFrame({"a": [1]}), tmp_path / "b.csv")
        contract.atomic_write(tmp_path / "c.bin", lambda fh: fh.write(b"\0"))
    finally:
        os.umask(old)
    for name in ("a.txt", "b.csv", "c.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_every_write_is_flushed_to_disk_before_the_rename_in_the_same_folder(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda src, dst: (events.append(("replace", Path(src).parent, Path(dst))),
                                                         real_replace(src, dst))[1])
    target = tmp_path / "sub" / "t.csv"
    contract.write_text("a,b\n", target)
    assert events == ["fsync", ("replace", target.parent, target)]
    assert target.read_text() == "a,b\n" and os.listdir(target.parent) == ["t.csv"]


def test_run_and_dataset_files_of_a_real_training_job_are_readable_by_colleagues(tmp_path):
    """The train and dataset steps, run as the workflow runs them, under umask 022."""
    spec = {"study": "s", "variant": "v", "training": {"optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.0,
                                                                     "nesterov": False},
                                                       "epochs": 1, "batch_size": 32},
            "dataset": {"name": "d", "generator": "make_circles", "n_train": 20,
                        "params": {"n_samples": 40, "noise": 0.1, "random_state": 0}},
            "layers": [{"dense": {"units": 1, "activation": "sigmoid", "kernel_initializer": "glorot_uniform",
                                  "use_bias": True}}]}
    script = (
        "import os, sys; os.umask(0o022); from reglab.cli import main; "
        f"sys.exit(main(['dataset', '--spec', {json.dumps(json.dumps(spec['dataset']))}, '--out', 'd.npz']) or "
        f"main(['train', '--spec', {json.dumps(json.dumps(spec))}, '--dataset', 'd.npz', '--seeds', '0', "
        "'--outdir', 'job']))"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [tmp_path / "d.npz", *(tmp_path / "job" / "v").iterdir()]
    assert {f.name for f in files} >= {"d.npz", contract.HISTORY, contract.FINAL, contract.META, contract.BOUNDARY}
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o644" for f in files}


# --------------------------------------------------------------------------- layout
def test_layout_paths():
    assert contract.dataset_path("results", "circles") == "results/datasets/circles.npz"
    assert contract.job_dir("results", "s", "p", 2) == "results/runs/s/p/chunk2"
    assert contract.aggregate_path("r", "s", "summary") == "r/aggregate/s/summary.csv"
    assert contract.config_path("results") == "results/config.json"


def test_variant_run_dirs_are_found_in_chunk_order_whatever_their_pack(tmp_path):
    for pack, chunk in (("grid", 10), ("grid", 2), ("other", 0)):
        (tmp_path / "runs" / "s" / pack / f"chunk{chunk}" / "v").mkdir(parents=True)
    (tmp_path / "runs" / "s" / "grid" / "chunk1" / "w").mkdir(parents=True)
    found = contract.variant_run_dirs(tmp_path, "s", "v")
    assert [d.relative_to(tmp_path / "runs" / "s").as_posix() for d in found] == [
        "other/chunk0/v", "grid/chunk2/v", "grid/chunk10/v"]


def test_a_validated_config_round_trips_and_anything_else_is_refused(tmp_path):
    contract.write_validated_config({"a": [1, "<b>"]}, "abc", tmp_path / "c.json")
    assert contract.read_validated_config(tmp_path / "c.json") == ({"a": [1, "<b>"]}, "abc")
    (tmp_path / "raw.json").write_text(json.dumps({"datasets": {}}))
    with pytest.raises(contract.ResultsError, match="raw.json: not a validated config"):
        contract.read_validated_config(tmp_path / "raw.json")
    with pytest.raises(contract.ResultsError, match="nope.json: validated config file is missing"):
        contract.read_validated_config(tmp_path / "nope.json")


# --------------------------------------------------------------------------- metric registry
def test_the_schema_allows_claims_on_exactly_the_claimable_metrics():
    from reglab.config import config_schema

    enum = config_schema()["$defs"]["claim_metric"]["enum"]
    assert enum == list(contract.CLAIM_METRICS)
    assert {"final_test_acc", "epochs_to_80"} <= set(enum) and "fit_time_s" not in enum


def test_every_metric_and_summary_column_is_well_formed():
    for name, m in contract.METRICS.items():
        assert m.name == name and m.label and m.better in ("higher", "lower", None) and m.digits >= 0
    for column in contract.SUMMARY:
        assert column.metric in contract.METRICS and column.stat in contract.STATISTICS
    assert len(set(contract.summary_stat_columns())) == len(contract.summary_stat_columns())


def test_statistics_by_hand():
    x = np.array([0.9, 0.1, 0.85, 0.8, 0.75, 0.7, 0.65, 0.2, np.nan])  # NaN: e.g. never reached 80%
    stats = {name: s.compute(x) for name, s in contract.STATISTICS.items()}
    assert stats["iqm"] == (pytest.approx((0.65 + 0.7 + 0.75 + 0.8) / 4),)  # two cut from each end
    assert stats["range"] == (0.1, 0.9) and stats["never"] == (1.0,)
    mean = 4.95 / 8
    assert stats["mean_std"][0] == pytest.approx(mean) and stats["mean_std"][1] == pytest.approx(np.std(x[:8], ddof=1))
    half = 2.364624251592785 * np.std(x[:8], ddof=1) / math.sqrt(8)  # t(0.975, 7)
    assert stats["ci"] == (pytest.approx(mean - half), pytest.approx(mean + half))


def test_a_new_metric_is_one_registry_entry(tmp_path, monkeypatch):
    """A metric and a summary column added to the registries reach per_seed.csv, summary.csv and the
    report's table with no other change."""
    worst = Metric("worst_epoch_test_acc", "Worst epoch test acc", lambda job: job.history["test_acc"].min(axis=1))
    monkeypatch.setitem(contract.METRICS, worst.name, worst)
    monkeypatch.setattr(contract, "SUMMARY", (*contract.SUMMARY, Column(worst.name, "mean")))
    monkeypatch.setattr(report, "SUMMARY", contract.SUMMARY)
    aggregate_study([write_job(tmp_path / "run", [0.9, 0.8])], tmp_path / "agg")
    per_seed = pd.read_csv(tmp_path / "agg" / "per_seed.csv")
    summary = pd.read_csv(tmp_path / "agg" / "summary.csv")
    assert list(per_seed["worst_epoch_test_acc"]) == pytest.approx([0.7, 0.7])
    assert summary.loc[0, "worst_epoch_test_acc_mean"] == pytest.approx(0.7)
    table = report.summary_table(summary)
    assert table["headers"][-3] == "Worst epoch test acc" and table["rows"][0][-3] == "0.700"


def test_the_iqm_column_is_in_the_summary_table(tmp_path):
    aggregate_study([write_job(tmp_path / "run", [0.9, 0.1, 0.85, 0.8, 0.75, 0.7, 0.65, 0.2])], tmp_path / "agg")
    table = report.summary_table(pd.read_csv(tmp_path / "agg" / "summary.csv"))
    row = dict(zip(table["headers"], table["rows"][0]))
    iqm, interval = row["Test acc IQM (95% bootstrap CI)"].split(" (")
    low, high = (float(v) for v in interval.rstrip(")").split("\u2013"))
    assert iqm == "0.725" and low < 0.725 < high and row["n"] == "8" and row["Final test acc"].startswith("0.619 ± ")
