"""Statistics against scipy and hand-computed values; claim verdicts on synthetic per-seed data."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from reglab import stats


# --------------------------------------------------------------------------- descriptive and tests
def test_mean_ci_matches_scipy_t_interval():
    x = [0.8, 0.82, 0.85, 0.79, 0.9]
    m, lo, hi = stats.mean_ci(x)
    want = st.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=st.sem(x))
    assert m == pytest.approx(np.mean(x))
    assert (lo, hi) == pytest.approx(want)


def test_mean_ci_degenerate_cases():
    assert stats.mean_ci([0.7])[0] == 0.7 and all(math.isnan(v) for v in stats.mean_ci([0.7])[1:])
    assert all(math.isnan(v) for v in stats.mean_ci([]))
    assert stats.mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    assert stats.mean_ci([1.0, np.nan, 3.0])[0] == 2.0  # NaN dropped


@pytest.mark.parametrize("alt", ["two-sided", "greater", "less"])
def test_welch_t_matches_scipy(alt):
    a, b = [1.0, 2.0, 3.5, 4.0], [2.0, 3.0, 5.0, 6.5, 7.0]
    r = st.ttest_ind(a, b, equal_var=False, alternative=alt)
    got = stats.welch_t(a, b, alt)
    assert got["statistic"] == pytest.approx(r.statistic)
    assert got["p_value"] == pytest.approx(r.pvalue)
    assert got["df"] == pytest.approx(r.df)


def test_welch_t_zero_variance_limit():
    limit = stats.welch_t([1, 1, 1], [0.9, 0.9, 0.9], "greater")
    assert (limit["statistic"], limit["p_value"]) == (math.inf, 0.0)
    assert stats.welch_t([1, 1, 1], [0.9, 0.9, 0.9], "less")["p_value"] == 1.0
    assert stats.welch_t([1, 1, 1], [1, 1, 1], "two-sided")["p_value"] == 1.0
    assert math.isnan(stats.welch_t([1], [2, 3])["p_value"])


def test_one_sample_t_matches_scipy():
    x = [0.81, 0.79, 0.86, 0.9, 0.84]
    r = st.ttest_1samp(x, 0.8, alternative="greater")
    got = stats.one_sample_t(x, 0.8, "greater")
    assert (got["statistic"], got["p_value"]) == pytest.approx((r.statistic, r.pvalue))


@pytest.mark.parametrize("alt", ["two-sided", "greater", "less"])
def test_mann_whitney_matches_scipy(alt):
    a, b = [3.0, 4.0, 5.0, 7.0, 9.0], [1.0, 2.0, 2.5, 6.0]
    r = st.mannwhitneyu(a, b, alternative=alt)
    got = stats.mann_whitney(a, b, alt)
    assert got["statistic"] == pytest.approx(r.statistic)
    assert got["p_value"] == pytest.approx(r.pvalue)


def test_common_language_and_rank_biserial_by_hand():
    # pairs (a, b): 1<2, 1<2, 2=2, 2=2, 3>2, 3>2 -> (2 + 0.5 * 2) / 6
    assert stats.common_language([1, 2, 3], [2, 2]) == pytest.approx(0.5)
    assert stats.rank_biserial([1, 2, 3], [2, 2]) == pytest.approx(0.0)
    assert stats.rank_biserial([5, 6], [1, 2]) == 1.0
    assert stats.mann_whitney([5, 6], [1, 2])["rank_biserial"] == 1.0


def test_mann_whitney_infinity_ranks_above_everything():
    a, b = [1.0, 2.0, math.inf], [4.0, 5.0, 6.0, 7.0]
    got = stats.mann_whitney(a, b, "greater")
    ref = st.mannwhitneyu([1.0, 2.0, 100.0], b, alternative="greater")
    assert got["p_value"] == pytest.approx(ref.pvalue) and got["statistic"] == ref.statistic


def test_mann_whitney_all_tied_gives_p_one():
    assert stats.mann_whitney([1, 1, 1], [1, 1, 1], "greater")["p_value"] == 1.0


def test_wilcoxon_matches_scipy_and_hand_rank_sums():
    x = np.array([1.0, 2.0, -3.0, 4.0])  # ranks of |x|: 1, 2, 3, 4 -> W+ = 7, W- = 3
    got = stats.wilcoxon_signed_rank(x, 0.0, "greater")
    assert got["statistic"] == 7.0
    assert got["rank_biserial"] == pytest.approx((7 - 3) / 10)
    assert got["p_value"] == pytest.approx(st.wilcoxon(x, alternative="greater").pvalue)


def test_wilcoxon_degenerate_cases():
    assert stats.wilcoxon_signed_rank([0.8] * 5, 0.8, "greater")["p_value"] == 1.0  # all differences zero
    equal = stats.wilcoxon_signed_rank([1.0] * 5, 0.9, "greater")  # all differences equal: exact 2^-n
    assert equal["p_value"] == pytest.approx(0.5**5)
    assert stats.wilcoxon_signed_rank([1.0] * 5, 0.9, "less")["p_value"] == pytest.approx(1.0)


def test_effect_sizes_by_hand():
    a, b = [1.0, 2.0, 3.0], [3.0, 4.0, 5.0]  # means 2 and 4, both variances 1
    assert stats.cohens_d(a, b) == pytest.approx(-2.0)
    assert stats.hedges_g(a, b) == pytest.approx(-2.0 * (1 - 3 / (4 * 6 - 9)))
    assert stats.cohens_d_one_sample([1.0, 2.0, 3.0], 0.0) == pytest.approx(2.0)
    assert stats.cohens_d([1, 1], [0, 0]) == math.inf


# --------------------------------------------------------------------------- claims
def per_seed_frame(groups: dict[str, list[float]], metric: str, study: str = "s") -> pd.DataFrame:
    """A per_seed table with one metric for the given variants."""
    rows = [{"study": study, "variant": v, "seed": i, metric: x} for v, xs in groups.items() for i, x in enumerate(xs)]
    return pd.DataFrame(rows)


def claim(**kw) -> dict:
    return {"id": "c", "text": "t", "study": "s", "variant": "a", "metric": "final_test_acc",
            "direction": "greater", "threshold": 0, "alpha": 0.05, **kw}


HIGH = [0.84, 0.86, 0.85, 0.87, 0.86, 0.85, 0.88, 0.84]
LOW = [0.74, 0.76, 0.75, 0.77, 0.73, 0.75, 0.76, 0.74]
MIXED = [0.80, 0.82, 0.75, 0.86, 0.78, 0.83, 0.76, 0.85]


@pytest.mark.parametrize("a, b, direction, verdict", [
    (HIGH, LOW, "greater", "supported"),
    (HIGH, LOW, "less", "contradicted"),
    (LOW, HIGH, "greater", "contradicted"),
    (MIXED, [0.81, 0.79, 0.77, 0.84, 0.8, 0.82, 0.78, 0.83], "greater", "inconclusive"),
])
def test_two_sample_claim_verdicts(a, b, direction, verdict):
    res = stats.check_claim(claim(compare_to="b", direction=direction), per_seed_frame({"a": a, "b": b}, "final_test_acc"))
    assert res["verdict"] == verdict
    assert res["test"].startswith("Mann-Whitney") and res["secondary_test"].startswith("Welch")
    assert res["n_a"] == res["n_b"] == 8
    assert res["mean_a"] == pytest.approx(np.mean(a)) and res["mean_b"] == pytest.approx(np.mean(b))
    assert -1 <= res["effect_size"] <= 1


def test_two_sample_threshold_shifts_the_hypothesis():
    ps = per_seed_frame({"a": HIGH, "b": LOW}, "final_test_acc")  # a exceeds b by about 0.1
    assert stats.check_claim(claim(compare_to="b", threshold=0.05), ps)["verdict"] == "supported"
    assert stats.check_claim(claim(compare_to="b", threshold=0.2), ps)["verdict"] == "contradicted"


@pytest.mark.parametrize("values, threshold, direction, verdict", [
    (HIGH, 0.8, "greater", "supported"),
    (LOW, 0.8, "greater", "contradicted"),
    (MIXED, 0.8, "greater", "inconclusive"),
    ([1.0] * 8, 0.95, "greater", "supported"),  # all differences equal
    ([0.8] * 8, 0.8, "greater", "inconclusive"),  # all differences zero
])
def test_one_sample_claim_verdicts(values, threshold, direction, verdict):
    res = stats.check_claim(claim(threshold=threshold, direction=direction), per_seed_frame({"a": values}, "final_test_acc"))
    assert res["verdict"] == verdict
    assert res["kind"] == "one-sample" and res["test"].startswith("Wilcoxon")


NEVER = math.nan  # per_seed.csv leaves epochs_to_80 empty when 80% is never reached


@pytest.mark.parametrize("a, b, verdict", [
    ([5, 6, 5, 7, 6, 5], [20, 25, NEVER, 30, NEVER, 22], "supported"),
    ([NEVER] * 6, [20, 25, 18, 30, 21, 22], "contradicted"),  # never reaching is slower than any epoch
    ([10, NEVER, 12, NEVER, 11, 30], [11, 29, NEVER, 12, NEVER, 10], "inconclusive"),
])
def test_epochs_to_80_never_counts_as_slowest(a, b, verdict):
    ps = per_seed_frame({"a": a, "b": b}, "epochs_to_80")
    res = stats.check_claim(claim(metric="epochs_to_80", direction="less", compare_to="b"), ps)
    assert res["verdict"] == verdict
    assert res["never_a"] == sum(math.isnan(x) for x in a)


@pytest.mark.parametrize("values, verdict", [
    ([5, 6, 7, 5, 6, 8], "supported"),
    ([NEVER, NEVER, 40, NEVER, 50, NEVER], "contradicted"),
    ([10, NEVER, 15, 30, 25, 22], "inconclusive"),
])
def test_one_sample_epochs_to_80_with_never(values, verdict):
    ps = per_seed_frame({"a": values}, "epochs_to_80")
    res = stats.check_claim(claim(metric="epochs_to_80", direction="less", threshold=20), ps)
    assert res["verdict"] == verdict


def test_too_few_seeds_and_missing_variant_are_inconclusive():
    ps = per_seed_frame({"a": [0.9, 0.95], "b": [0.5, 0.5, 0.5]}, "final_test_acc")
    res = stats.check_claim(claim(compare_to="b"), ps)
    assert res["verdict"] == "inconclusive" and "too few" in res["note"] and math.isnan(res["p_value"])
    assert stats.check_claim(claim(variant="zzz"), ps)["verdict"] == "inconclusive"


def test_claim_filters_by_study_and_rejects_unknown_metric():
    ps = pd.concat([per_seed_frame({"a": HIGH}, "final_test_acc", "s"), per_seed_frame({"a": LOW}, "final_test_acc", "t")])
    assert stats.check_claim(claim(threshold=0.8), ps)["verdict"] == "supported"
    assert stats.check_claim(claim(threshold=0.8, study="t"), ps)["verdict"] == "contradicted"
    with pytest.raises(ValueError, match="unknown metric"):
        stats.check_claim(claim(metric="nope"), ps)


# --------------------------------------------------------------------------- published
def test_compare_published_rows_and_range():
    summary = pd.DataFrame({"study": ["s", "s"], "variant": ["a", "b"]})
    ps = pd.DataFrame({"study": "s", "variant": ["a"] * 3 + ["b"] * 3,
                       "final_train_acc": [29 / 30, 29 / 30, 29 / 30, 1.0, 1.0, 1.0],
                       "final_test_acc": [0.80, 0.82, 0.84, 0.70, 0.72, 0.74]})
    published = {"studies": {"s": {"a": {"train": 0.967, "test": 0.83}, "b": {"train": 1.0, "test": 0.757}},
                             "other": {"a": {"train": 0.1}}}}
    df = stats.compare_published(published, summary, ps)
    assert list(df[["variant", "split"]].itertuples(index=False, name=None)) == [
        ("a", "train"), ("a", "test"), ("b", "train"), ("b", "test")]
    got = dict(zip(zip(df["variant"], df["split"]), df["within_range"]))
    assert got == {("a", "train"): True, ("a", "test"): True, ("b", "train"): True, ("b", "test"): False}
    row = df.iloc[1]
    assert (row["mean"], row["min"], row["max"], row["n"]) == pytest.approx((0.82, 0.80, 0.84, 3))
    assert row["std"] == pytest.approx(0.02)


def test_diverged_seeds_do_not_count_as_never_reaching_80():
    from reglab.stats import metric_values

    per_seed = pd.DataFrame({"study": "s", "variant": "v", "seed": [0, 1, 2],
                             "epochs_to_80": [5.0, np.nan, np.nan], "diverged_epoch": [0, 0, 7]})
    values = metric_values(per_seed, "s", "v", "epochs_to_80")
    assert values.size == 2 and values[0] == 5.0 and np.isinf(values[1])  # seed 1 never; seed 2 left out
