"""Claims of several parts and intervals, bootstrap confidence intervals, the probability of
improvement and the Mann-Whitney power by resampling (issue 13)."""

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from reglab import contract
from reglab import stats as S
from reglab.config import ConfigError, validate_config

REPO = Path(__file__).resolve().parents[1]


def frame(groups: dict[str, list[float]], metric: str = "final_test_acc") -> pd.DataFrame:
    rows = [{"study": "s", "variant": v, "seed": i, metric: x} for v, xs in groups.items() for i, x in enumerate(xs)]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- bootstrap CIs
def test_bootstrap_ci_of_the_mean_is_close_to_the_t_interval_for_normal_data():
    x = np.random.default_rng(3).normal(0.8, 0.02, 40)
    lo, hi = S.bootstrap_ci(x, "mean")
    half = 2.0227 * x.std(ddof=1) / math.sqrt(40)  # t(0.975, 39)
    assert lo < x.mean() < hi
    assert (hi - lo) == pytest.approx(2 * half, rel=0.15)
    assert (lo, hi) == S.bootstrap_ci(x.copy(), "mean")  # deterministic


def test_the_iqm_interval_ignores_an_outlier_the_mean_interval_does_not():
    x = np.linspace(0.78, 0.82, 20)
    x_out = np.append(x, 0.1)  # one diverged-looking seed
    iqm_lo, iqm_hi = S.bootstrap_ci(x_out, "iqm")
    mean_lo, mean_hi = S.bootstrap_ci(x_out, "mean")
    middle = np.sort(x_out)[5:16].mean()  # the IQM of 21 values, by hand: drop 5.25 each end ~ middle 11
    assert iqm_lo <= middle <= iqm_hi
    assert iqm_hi - iqm_lo < 0.02
    assert mean_hi - mean_lo > 0.04
    assert S.bootstrap_ci([0.7, 0.7, 0.7], "iqm") == (0.7, 0.7)
    assert all(math.isnan(v) for v in S.bootstrap_ci([0.7], "mean"))


def test_the_summary_has_bootstrap_and_iqm_intervals():
    values = {m: np.array([0.70, 0.72, 0.74, 0.76, 0.78, 0.30]) for m in contract.METRICS}
    row = contract.summary_statistics(values)
    assert row["final_test_acc_boot_ci_low"] < row["final_test_acc_boot_ci_high"]
    # IQM of 6 values: trim 1.5 from each end -> (0.5*0.70 + 0.72 + 0.74 + 0.5*0.76) / 2... scipy trims
    # whole values: int(0.25 * 6) = 1 from each end -> mean of 0.70, 0.72, 0.74, 0.76
    assert row["final_test_acc_iqm"] == pytest.approx(0.73)
    assert row["final_test_acc_iqm_ci_low"] <= 0.73 <= row["final_test_acc_iqm_ci_high"]


# --------------------------------------------------------------------------- probability of improvement
def test_probability_of_improvement_and_its_interval():
    a, b = [0.9, 0.91, 0.92, 0.93], [0.5, 0.51, 0.52]
    assert S.prob_improvement_ci(a, b) == (1.0, 1.0)
    lo, hi = S.prob_improvement_ci([0.1, 0.5, 0.9, 0.3, 0.7], [0.2, 0.6, 0.4, 0.8, 0.0])
    assert 0 <= lo < 0.5 < hi <= 1
    # "never" (inf) ranks above every finite value: a group that never got there is never better
    assert S.prob_improvement_ci([math.inf] * 4, [10.0, 12.0, 11.0]) == (1.0, 1.0)


# --------------------------------------------------------------------------- Mann-Whitney power
def test_mann_whitney_power_needs_three_seeds_for_separated_groups():
    # fully separated groups: U = n^2; asymptotic one-sided p with continuity correction at n = 3:
    # z = (9 - 4.5 - 0.5) / sqrt(3*3*7/12) = 1.746 -> p = 0.040 < 0.05 every time
    assert S.mw_seeds_for_power([0.9, 0.91, 0.95], [0.5, 0.52, 0.55], 0.05, "greater") == 3


def test_mann_whitney_power_matches_theory_for_a_one_sd_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 4000), rng.normal(0.0, 1.0, 4000)
    # one-sided t-test at 0.05, d = 1, 80% power: 13 per group (noncentral t); the Mann-Whitney test's
    # efficiency for normal data is 3/pi = 0.955, so about 13 / 0.955 = 13.6
    n = S.mw_seeds_for_power(a, b, 0.05, "greater")
    assert 12 <= n <= 16
    assert S.mann_whitney_power(a, b, 40, 0.05, "greater") > 0.99


def test_no_number_of_seeds_decides_identical_groups():
    x = np.random.default_rng(1).normal(0, 1, 200)
    assert S.mw_seeds_for_power(x, x.copy(), 0.05, "greater", max_seeds=64) is None
    assert S.mann_whitney_power(x, x.copy(), 30, 0.05, "greater") < 0.1


# --------------------------------------------------------------------------- claims of several parts
PARTS = {"id": "c", "text": "t", "study": "s", "alpha": 0.05, "parts": [
    {"text": "a around 0.70-0.75", "variant": "a", "metric": "final_test_acc", "interval": [0.70, 0.75]},
    {"text": "a below b", "variant": "a", "compare_to": "b", "metric": "final_test_acc", "direction": "less"},
]}


def test_a_claim_is_supported_when_every_part_is():
    r = S.check_claim(PARTS, frame({"a": list(np.linspace(0.71, 0.74, 10)), "b": list(np.linspace(0.85, 0.9, 10))}))
    assert [p["verdict"] for p in r["parts"]] == ["supported"] * 3  # the interval is two one-sided parts
    assert r["verdict"] == "supported"
    assert r["p_value"] == max(p["p_value"] for p in r["parts"])


def test_one_undecided_part_leaves_the_claim_undecided_and_says_how_many_seeds():
    a = [0.72, 0.73, 0.71, 0.74, 0.72, 0.73, 0.735, 0.715]
    b = [0.73, 0.735, 0.72, 0.745, 0.725, 0.74, 0.73, 0.742]  # slightly above a: not significant at n = 8
    r = S.check_claim(PARTS, frame({"a": a, "b": b}))
    verdicts = [p["verdict"] for p in r["parts"]]
    assert verdicts[:2] == ["supported", "supported"] and verdicts[2] == "inconclusive"
    assert r["verdict"] == "inconclusive"
    assert r["seeds_needed"] == r["parts"][2]["seeds_needed"] > 8


def test_a_part_clearly_against_the_claim_contradicts_it():
    r = S.check_claim(PARTS, frame({"a": list(np.linspace(0.55, 0.6, 10)), "b": list(np.linspace(0.85, 0.9, 10))}))
    assert r["parts"][0]["verdict"] == "contradicted"  # below 0.70
    assert r["verdict"] == "contradicted"
    # the opposite-direction p of the claim: the smallest part's, Bonferroni over the three parts
    assert r["p_value_opposite"] == pytest.approx(min(1, 3 * min(p["p_value_opposite"] for p in r["parts"])))


def test_late_train_acc_is_the_running_training_accuracy_over_the_last_tenth():
    acc = np.tile(np.r_[np.zeros(90), np.full(10, 0.72)], (2, 1))
    acc[1, -10:] = np.linspace(0.70, 0.79, 10)
    job = contract.JobSeeds(history={"train_acc": acc, "test_acc": acc, "train_loss": acc, "test_loss": acc},
                            final={m: np.ones(2) for m in contract.HISTORY_METRICS}, epoch_time_s=np.ones(100),
                            fit_time_s=1.0, n_seeds=2)
    np.testing.assert_allclose(contract.METRICS["late_train_acc"].compute(job), [0.72, 0.745])


# --------------------------------------------------------------------------- config
def tiny():
    return yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())


def with_claim(claim):
    config = tiny()
    config["claims"] = [claim]
    return config


def study_and_variants(config):
    study = next(iter(config["studies"]))
    return study, list(config["studies"][study]["variants"])


def test_a_claim_of_parts_validates_and_its_mistakes_name_the_part():
    config = tiny()
    study, (v1, v2, *_) = study_and_variants(config)
    claim = {"id": "p", "text": "t", "study": study, "parts": [
        {"variant": v1, "metric": "late_train_acc", "interval": [0.7, 0.75]},
        {"variant": v1, "compare_to": v2, "metric": "final_test_acc", "direction": "less"}]}
    validate_config(with_claim(claim))
    bad = copy.deepcopy(claim)
    bad["parts"][1]["compare_to"] = "nope"
    with pytest.raises(ConfigError, match=r"claims\[0\]\.parts\[1\]\.compare_to: unknown variant 'nope'"):
        validate_config(with_claim(bad))
    bad = copy.deepcopy(claim)
    bad["parts"][0]["direction"] = "less"
    with pytest.raises(ConfigError, match=r"claims\[0\]\.parts\[0\]\.interval: give one of direction"):
        validate_config(with_claim(bad))
    bad = copy.deepcopy(claim)
    bad["parts"][0]["interval"] = [0.8, 0.7]
    with pytest.raises(ConfigError, match=r"claims\[0\]\.parts\[0\]\.interval: .*low < high"):
        validate_config(with_claim(bad))
    bad = copy.deepcopy(claim)
    bad["variant"] = v1  # parts and a single test at once
    with pytest.raises(ConfigError, match=r"claims\[0\]"):
        validate_config(with_claim(bad))


def test_the_default_config_states_the_seeds_multi_part_claims_in_parts():
    config = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    claims = {c["id"]: c for c in config["claims"]}
    assert [p["interval"] for p in claims["bn_before_worse_train"]["parts"] if "interval" in p] == [[0.70, 0.75]]
    assert claims["bn_before_worse_train"]["parts"][0]["metric"] == "late_train_acc"
    assert len(claims["dropout_reduces_overfitting"]["parts"]) == 2


def test_a_part_pointing_against_the_claim_sets_the_seeds_it_needs():
    """Undecided overall, with one part's shift against the claim: more seeds decide it through that
    part (contradicted), so the claim needs that part's seeds, not the most any part needs."""
    a = 0.747 + np.array([-0.006, 0.004, -0.002, 0.005, -0.004, 0.003, 0.001, -0.001])
    b = a - 0.0036 + np.array([0.003, -0.002, 0.004, -0.003, 0.002, -0.004, 0.001, 0.0])  # a above b
    r = S.check_claim(PARTS, frame({"a": list(a), "b": list(b)}))
    assert r["verdict"] == "inconclusive"
    assert r["parts"][2]["shift"] > 0  # claimed: a below b
    assert r["seeds_needed"] == r["parts"][2]["seeds_needed"] < r["parts"][1]["seeds_needed"]
