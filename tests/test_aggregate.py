"""Aggregation: values by hand on a tiny history, output files, and clear errors for bad results."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from reglab.aggregate import RUNTIME_COLUMNS, ResultsError, aggregate_study, per_seed_columns, summary_columns
from reglab.contract import HISTORY_METRICS

# seed 0 passes 80% at epoch 2, peaks at epoch 3, ends at 0.7; seed 1 never reaches 80%
TEST_ACC = {0: [0.5, 0.8, 0.9, 0.7], 1: [0.5, 0.6, 0.7, 0.75]}
TRAIN_ACC = {0: [0.6, 0.8, 0.9, 1.0], 1: [0.5, 0.7, 0.8, 0.9]}
EPOCH_TIME = [1.0, 2.0, 3.0, 4.0]  # whole job, 2 seeds


def write_tiny_job(run_dir, variant="v", chunk=0, seeds=(0, 1), study="s"):
    """A hand-checkable job: 2 seeds x 4 epochs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    hist = [{"study": study, "variant": variant, "seed": s, "epoch": e + 1, "train_loss": 1.0 - TRAIN_ACC[s % 2][e],
             "train_acc": TRAIN_ACC[s % 2][e], "test_loss": 1.0 - TEST_ACC[s % 2][e], "test_acc": TEST_ACC[s % 2][e],
             "epoch_time_s": EPOCH_TIME[e]} for e in range(4) for s in seeds]  # epoch-major, like results.py
    final = [{"study": study, "variant": variant, "seed": s, "train_loss": 0.1, "train_acc": TRAIN_ACC[s % 2][-1],
              "test_loss": 0.3, "test_acc": TEST_ACC[s % 2][-1]} for s in seeds]
    pd.DataFrame(hist).to_csv(run_dir / "history.csv", index=False)
    pd.DataFrame(final).to_csv(run_dir / "final.csv", index=False)
    meta = {"schema_version": 1, "study": study, "variant": variant, "chunk": chunk, "seeds": list(seeds),
            "fit_time_s": 12.0, "peak_rss_mb": 100.0, "threads": 2, "accelerator": "cpu"}
    (run_dir / "meta.json").write_text(json.dumps(meta))
    return run_dir


@pytest.fixture
def tiny(tmp_path):
    run = write_tiny_job(tmp_path / "runs" / "s" / "v" / "chunk0")
    out = tmp_path / "agg"
    aggregate_study([run], out)
    return {name: pd.read_csv(out / f"{name}.csv") for name in ("per_seed", "curves", "summary", "runtime", "finals")}


def test_per_seed_values_by_hand(tiny):
    ps = tiny["per_seed"].set_index("seed")
    assert list(tiny["per_seed"].columns) == list(per_seed_columns())
    s0, s1 = ps.loc[0], ps.loc[1]
    assert s0["epochs_to_80"] == 2
    assert math.isnan(s1["epochs_to_80"])  # never reached 80%
    assert (s0["peak_test_acc"], s0["peak_epoch"]) == (0.9, 3)
    assert (s1["peak_test_acc"], s1["peak_epoch"]) == (0.75, 4)
    assert s0["overfit_drop"] == pytest.approx(0.2) and s1["overfit_drop"] == pytest.approx(0.0)
    assert s0["test_acc_volatility"] == pytest.approx((0.3 + 0.1 + 0.2) / 3)
    assert s1["test_acc_volatility"] == pytest.approx((0.1 + 0.1 + 0.05) / 3)
    assert s0["generalisation_gap"] == pytest.approx(1.0 - 0.7)
    assert (s0["final_train_acc"], s0["final_test_acc"], s0["final_test_loss"]) == (1.0, 0.7, 0.3)
    assert s0["time_to_80_s"] == pytest.approx((1.0 + 2.0) / 2)  # per replica: job time / 2 seeds
    assert math.isnan(s1["time_to_80_s"])
    assert s0["n_epochs"] == 4
    assert s0["fit_time_s"] == s1["fit_time_s"] == 6.0  # the job's 12 s shared by its 2 seeds


def test_curves_by_hand(tiny):
    c = tiny["curves"]
    assert list(c["epoch"]) == [1, 2, 3, 4] and set(c["variant"]) == {"v"}
    for m in HISTORY_METRICS:
        assert {f"{m}_mean", f"{m}_std", f"{m}_n"} <= set(c.columns)
    e2 = c[c["epoch"] == 2].iloc[0]
    assert e2["test_acc_mean"] == pytest.approx(0.7)
    assert e2["test_acc_std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert e2["n"] == 2 and e2["test_acc_n"] == 2


def test_summary_and_runtime_by_hand(tiny):
    s = tiny["summary"].iloc[0]
    assert list(tiny["summary"].columns) == list(summary_columns())
    assert (s["n"], s["n_jobs"], s["epochs_to_80_never"]) == (2, 1, 1)
    assert s["final_test_acc_mean"] == pytest.approx(0.725)
    assert (s["final_test_acc_min"], s["final_test_acc_max"]) == (0.7, 0.75)
    assert s["final_test_acc_ci_low"] < 0.7 < 0.75 < s["final_test_acc_ci_high"]
    assert s["epochs_to_80_mean"] == 2 and math.isnan(s["epochs_to_80_std"])
    assert s["peak_test_acc_mean"] == pytest.approx(0.825) and s["peak_epoch_mean"] == 3.5
    assert s["fit_time_s_mean"] == 6.0
    assert s["epoch_time_job_mean_s"] == 2.5 and s["epoch_time_job_std_s"] == pytest.approx(np.std(EPOCH_TIME, ddof=1))
    assert s["epoch_time_replica_mean_s"] == 1.25
    assert s["time_to_80_s_mean"] == pytest.approx(1.5)
    assert s["final_test_acc_iqm"] == pytest.approx(0.725)  # 2 seeds: nothing to trim
    r = tiny["runtime"].iloc[0]
    assert list(tiny["runtime"].columns) == list(RUNTIME_COLUMNS)
    assert (r["n_seeds"], r["fit_time_s"], r["fit_time_per_seed_s"], r["threads"]) == (2, 12.0, 6.0, 2)
    assert r["epoch_time_mean_s"] == 2.5 and r["peak_rss_mb"] == 100.0
    assert len(tiny["finals"]) == 2 and "chunk" in tiny["finals"].columns


def test_variant_order_and_chunks(tmp_path):
    runs = [write_tiny_job(tmp_path / "zeta1", "zeta", 1, (2, 3)), write_tiny_job(tmp_path / "zeta0", "zeta", 0, (0, 1)),
            write_tiny_job(tmp_path / "alpha", "alpha", 0, (0, 1))]
    aggregate_study(runs, tmp_path / "agg")
    summary = pd.read_csv(tmp_path / "agg" / "summary.csv")
    assert list(summary["variant"]) == ["zeta", "alpha"]
    assert list(summary["n"]) == [4, 2] and list(summary["n_jobs"]) == [2, 1]
    ps = pd.read_csv(tmp_path / "agg" / "per_seed.csv")
    assert list(ps["variant"]) == ["zeta"] * 4 + ["alpha"] * 2 and list(ps["seed"][:4]) == [0, 1, 2, 3]
    assert list(pd.read_csv(tmp_path / "agg" / "curves.csv")["variant"].unique()) == ["zeta", "alpha"]
    assert not [p for p in (tmp_path / "agg").iterdir() if p.name.startswith(".")]  # no temp files left


def test_synthetic_tree_aggregates(synthetic_aggregated):
    agg = synthetic_aggregated.results_dir / "aggregate" / "bn"
    assert {p.name for p in agg.iterdir()} == {"finals.csv", "per_seed.csv", "curves.csv", "summary.csv", "runtime.csv"}
    assert len(pd.read_csv(agg / "per_seed.csv")) == 15 and len(pd.read_csv(agg / "runtime.csv")) == 6
    assert list(pd.read_csv(agg / "summary.csv")["variant"]) == ["baseline", "bn_after", "bn_before"]


def test_duplicate_seed_across_jobs_is_an_error(tmp_path):
    runs = [write_tiny_job(tmp_path / "a"), write_tiny_job(tmp_path / "b", chunk=1)]
    with pytest.raises(ResultsError, match="seed 0 appears in more than one"):
        aggregate_study(runs, tmp_path / "agg")


# --------------------------------------------------------------------------- bad files
def _truncate_mid_line(path):
    text = path.read_text()
    path.write_text(text[: len(text) - 25])


def _drop_last_rows(path):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def _rename_column(path):
    text = path.read_text()
    path.write_text(text.replace("test_acc", "val_acc", 1))


def _header_only(path):
    path.write_text(path.read_text().splitlines(keepends=True)[0])


def _garbage_value(path):
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace("0.5", "abc", 1)
    path.write_text("".join(lines))


def _set_cell(column, value):
    """A damage: the first data row's ``column`` set to the text ``value``."""
    def damage(path):
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df.loc[0, column] = value
        df.to_csv(path, index=False)
    return damage


@pytest.mark.parametrize("name, damage, message", [
    ("history.csv", lambda p: p.unlink(), "missing"),
    ("history.csv", _set_cell("epoch_time_s", ""), "empty value in column 'epoch_time_s' at data row 1"),
    ("history.csv", _set_cell("epoch_time_s", "nan"), "column 'epoch_time_s' has a bad value 'nan' at data row 1"),
    ("history.csv", _set_cell("epoch", "1.5"), "column 'epoch' has a non-integer value '1.5' at data row 1"),
    ("final.csv", _set_cell("seed", ""), "empty value in column 'seed' at data row 1"),
    ("final.csv", lambda p: p.unlink(), "missing"),
    ("meta.json", lambda p: p.unlink(), "missing"),
    ("history.csv", _truncate_mid_line, "truncated"),
    ("history.csv", _drop_last_rows, "truncated"),
    ("final.csv", _drop_last_rows, "truncated"),
    ("history.csv", _rename_column, "wrong columns"),
    ("final.csv", _rename_column, "wrong columns"),
    ("history.csv", _header_only, "no data rows"),
    ("history.csv", lambda p: p.write_text(""), "empty"),
    ("history.csv", _garbage_value, "bad value 'abc'"),
    ("meta.json", lambda p: p.write_text(p.read_text()[:30]), "not valid JSON"),
    ("meta.json", lambda p: p.write_text(json.dumps({"study": "s"})), "missing keys"),
])
def test_bad_results_file_raises_one_clear_error(tmp_path, name, damage, message):
    run = write_tiny_job(tmp_path / "run")
    damage(run / name)
    with pytest.raises(ResultsError) as err:
        aggregate_study([run], tmp_path / "agg")
    assert str(run / name) in str(err.value)
    assert message in str(err.value)
    assert not (tmp_path / "agg" / "summary.csv").exists()


def test_summary_iqm_is_the_mean_of_the_middle_half_of_the_seeds(tmp_path):
    # 8 seeds, final test accuracies 0.1 .. 0.8 (seed s ends at TEST_ACC of its parity: overwrite final.csv)
    run = write_tiny_job(tmp_path / "run", seeds=tuple(range(8)))
    final = pd.read_csv(run / "final.csv")
    final["test_acc"] = [0.9, 0.1, 0.85, 0.8, 0.75, 0.7, 0.65, 0.2]
    final.to_csv(run / "final.csv", index=False)
    aggregate_study([run], tmp_path / "agg")
    s = pd.read_csv(tmp_path / "agg" / "summary.csv").iloc[0]
    assert s["final_test_acc_iqm"] == pytest.approx((0.65 + 0.7 + 0.75 + 0.8) / 4)  # 2 cut from each end
    assert s["final_test_acc_mean"] == pytest.approx(4.95 / 8)
