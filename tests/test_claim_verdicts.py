"""Claim verdicts on per-seed data built to be supported, contradicted or inconclusive.

Every expected verdict follows from how the data are built (a shift far larger than the noise, groups
that interleave, identical groups, exact rank-test null distributions counted by hand below), never
from reglab's own statistics. tests/test_stats.py checks the test statistics against scipy and a
first set of verdicts; this file covers the rest: both directions of both kinds of claim with and
without a threshold, exact boundaries, one-sided tests in the claimed direction, "never" values of
epochs_to_80 and diverged seeds.
"""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from reglab.stats import check_claim

N = 10
NEVER = math.nan  # per_seed.csv leaves epochs_to_80 empty when a seed never reaches 80%
#: 10 distinct accuracies, exact in binary (multiples of 1/64), 1/64 apart
BASE = 0.75 + np.arange(N) / 64
#: noise far smaller than the shifts used (0.05, 0.1): it only breaks ties
TINY = np.random.default_rng(11).uniform(-1e-3, 1e-3, N)


def frame(metric: str = "final_test_acc", diverged: dict | None = None, **groups) -> pd.DataFrame:
    """A per_seed table (study ``s``): ``variant=[values]``; ``diverged={variant: {seed index: epoch}}``."""
    rows = []
    for variant, values in groups.items():
        for seed, x in enumerate(values):
            rows.append({"study": "s", "variant": variant, "seed": seed,
                         "diverged_epoch": (diverged or {}).get(variant, {}).get(seed, 0), metric: float(x)})
    return pd.DataFrame(rows)


def claim(variant="a", compare_to=None, direction="greater", threshold=0.0, metric="final_test_acc", alpha=0.05):
    c = {"id": "c", "text": "t", "study": "s", "variant": variant, "metric": metric, "direction": direction,
         "threshold": threshold, "alpha": alpha}
    return c if compare_to is None else {**c, "compare_to": compare_to}


def verdict(c: dict, per_seed: pd.DataFrame) -> str:
    return check_claim(c, per_seed)["verdict"]


# --------------------------------------------------------------------------- exact null distributions
def exact_rank_sum_p(a, b) -> float:
    """P(U_a >= observed) over every split of the pooled values (no ties): one-sided, 'a greater'."""
    pooled, n = np.concatenate([a, b]), len(a)
    u = lambda x, y: sum(xi > yj for xi in x for yj in y)  # noqa: E731
    observed = u(a, b)
    splits = list(itertools.combinations(range(len(pooled)), n))
    hits = sum(u(pooled[list(i)], np.delete(pooled, list(i))) >= observed for i in splits)
    return hits / len(splits)


def exact_signed_rank_p(d) -> float:
    """P(W+ >= observed) over every sign pattern of |d| (no ties, no zeros): one-sided, 'greater'."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    observed = ranks[np.asarray(d) > 0].sum()
    patterns = list(itertools.product([0, 1], repeat=len(d)))
    return sum(ranks[np.array(p, bool)].sum() >= observed for p in patterns) / len(patterns)


# --------------------------------------------------------------------------- two-sample
SHIFTED = {  # a = b + shift (+ tiny noise), 10 seeds each: the shift is 6-13 times the noise-free spacing
    "a_higher": (BASE + 0.1 + TINY, BASE),
    "a_lower": (BASE - 0.1 + TINY, BASE),
}


@pytest.mark.parametrize("case, direction, expected", [
    ("a_higher", "greater", "supported"),
    ("a_higher", "less", "contradicted"),
    ("a_lower", "greater", "contradicted"),
    ("a_lower", "less", "supported"),
])
def test_two_sample_clear_shift_in_both_directions(case, direction, expected):
    # BASE spans 9/64 = 0.14, so a shift of 0.1 still overlaps: the groups are not trivially separated
    a, b = SHIFTED[case]
    assert verdict(claim(compare_to="b", direction=direction), frame(a=a, b=b)) == expected


@pytest.mark.parametrize("direction", ["greater", "less"])
def test_two_sample_interleaved_and_identical_groups_are_inconclusive(direction):
    interleaved = frame(a=BASE[0::2], b=BASE[1::2])  # 5 and 5 alternating ranks: U_a = 10 of 25
    identical = frame(a=BASE, b=BASE.copy())  # every value tied with one of the other group
    constant = frame(a=[0.8] * N, b=[0.8] * N)  # every value tied
    for ps in (interleaved, identical, constant):
        assert verdict(claim(compare_to="b", direction=direction), ps) == "inconclusive"


@pytest.mark.parametrize("direction, threshold", [
    ("greater", 0.05),  # "a exceeds b by more than 0.05"
    ("greater", -0.05),  # "a is at most 0.05 below b"
    ("less", -0.05),  # "a is below b by more than 0.05"
    ("less", 0.05),  # "a is at most 0.05 above b"
])
@pytest.mark.parametrize("past, expected", [(+0.1, "supported"), (-0.1, "contradicted"), (0.0, "inconclusive")])
def test_two_sample_threshold_is_the_claimed_shift(direction, threshold, past, expected):
    """a = b + threshold, moved 0.1 past the threshold in the claimed direction (supported), 0.1 short of
    it (contradicted) or not at all (inconclusive: a - threshold equals b up to float round-off)."""
    sign = 1 if direction == "greater" else -1
    a = BASE + threshold + sign * past + (TINY if past else 0)
    assert verdict(claim(compare_to="b", direction=direction, threshold=threshold), frame(a=a, b=BASE)) == expected


def test_two_sample_same_data_other_threshold():
    """a = b + 0.1: 'a exceeds b' holds, 'a exceeds b by 0.2' is contradicted, 'by 0.1' cannot be told."""
    ps = frame(a=BASE + 0.1 + TINY, b=BASE)
    assert [verdict(claim(compare_to="b", threshold=t), ps) for t in (0.0, 0.1, 0.2)] == [
        "supported", "inconclusive", "contradicted"]


def test_two_sample_verdict_uses_the_one_sided_test_in_the_claimed_direction():
    """4 vs 4 seeds, a above b but for one swap: the exact one-sided p is 2/70 = 0.029, two-sided 0.057."""
    a, b = np.array([0.90, 0.89, 0.88, 0.86]), np.array([0.87, 0.85, 0.84, 0.83])
    p = exact_rank_sum_p(a, b)
    assert p == pytest.approx(2 / 70) and 0.02 < p < 0.05 < 2 * p
    ps = frame(a=a, b=b)
    assert verdict(claim(compare_to="b", direction="greater"), ps) == "supported"  # a two-sided test: inconclusive
    assert verdict(claim(compare_to="b", direction="less"), ps) == "contradicted"  # the opposite one-sided test
    assert verdict(claim(compare_to="b", direction="greater", alpha=0.02), ps) == "inconclusive"  # alpha counts
    assert verdict(claim(compare_to="b", direction="less", alpha=0.02), ps) == "inconclusive"
    # swapping the groups swaps the verdicts
    swapped = frame(a=b, b=a)
    assert verdict(claim(compare_to="b", direction="less"), swapped) == "supported"
    assert verdict(claim(compare_to="b", direction="greater"), swapped) == "contradicted"


def test_two_sample_perfect_separation_of_four_seeds():
    """4 vs 4 fully separated: exact one-sided p = 1/70 = 0.014."""
    a, b = BASE[4:8] + 0.01, BASE[:4]
    assert exact_rank_sum_p(a, b) == pytest.approx(1 / 70)
    assert verdict(claim(compare_to="b", direction="greater", alpha=0.02), frame(a=a, b=b)) == "supported"
    assert verdict(claim(compare_to="b", direction="greater", alpha=0.01), frame(a=a, b=b)) == "inconclusive"


def test_two_sample_with_too_few_seeds_is_inconclusive_however_clear():
    ps = frame(a=[0.99, 0.98], b=[0.1, 0.2, 0.3, 0.4])
    assert verdict(claim(compare_to="b"), ps) == "inconclusive"
    assert verdict(claim(compare_to="b", direction="less"), ps) == "inconclusive"


# --------------------------------------------------------------------------- one-sample
@pytest.mark.parametrize("offset, direction, threshold, expected", [
    (+0.05, "greater", 0.8, "supported"),
    (+0.05, "less", 0.8, "contradicted"),
    (-0.05, "greater", 0.8, "contradicted"),
    (-0.05, "less", 0.8, "supported"),
    (+0.05, "greater", 0.9, "contradicted"),  # the same values, a higher bar
    (+0.05, "less", 0.9, "supported"),
])
def test_one_sample_clear_in_both_directions(offset, direction, threshold, expected):
    values = 0.8 + offset + (BASE - BASE.mean()) / 10 + TINY / 10  # within 0.8 + offset +- 0.008
    assert verdict(claim(direction=direction, threshold=threshold), frame(a=values)) == expected


@pytest.mark.parametrize("direction", ["greater", "less"])
def test_one_sample_on_the_threshold_is_inconclusive(direction):
    symmetric = 0.8 + np.array([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5]) / 64  # W+ = W-
    exact = np.full(N, 0.8)  # every difference zero
    for values in (symmetric, exact):
        assert verdict(claim(direction=direction, threshold=0.8), frame(a=values)) == "inconclusive"


def test_one_sample_verdict_uses_the_one_sided_test_in_the_claimed_direction():
    """6 seeds above 0.8 but the closest one below: exact one-sided p = 2/64 = 0.031, two-sided 0.0625."""
    d = np.array([-1, 2, 3, 4, 5, 6]) / 64
    p = exact_signed_rank_p(d)
    assert p == pytest.approx(2 / 64) and 0.02 < p < 0.05 < 2 * p
    ps = frame(a=0.8 + d)
    assert verdict(claim(direction="greater", threshold=0.8), ps) == "supported"
    assert verdict(claim(direction="less", threshold=0.8), ps) == "contradicted"
    assert verdict(claim(direction="greater", threshold=0.8, alpha=0.02), ps) == "inconclusive"
    mirrored = frame(a=0.8 - d)
    assert verdict(claim(direction="less", threshold=0.8), mirrored) == "supported"
    assert verdict(claim(direction="greater", threshold=0.8), mirrored) == "contradicted"


def test_one_sample_with_too_few_seeds_is_inconclusive_however_clear():
    assert verdict(claim(threshold=0.5), frame(a=[0.99, 0.98])) == "inconclusive"


# --------------------------------------------------------------------------- epochs_to_80 and "never"
E80 = "epochs_to_80"


@pytest.mark.parametrize("a, b, expected", [
    (range(3, 13), [NEVER] * N, "supported"),  # every seed of a reached 80%, none of b
    ([NEVER] * N, range(3, 13), "contradicted"),
    ([NEVER] * N, [NEVER] * N, "inconclusive"),  # never = never
    # reached by 1 seed of a, fast; by all of b, slowly: 'never' is slower than any epoch (had the never
    # seeds been dropped, 1 seed would be too few for a test; as 'fast' they would support the claim)
    ([4] + [NEVER] * 9, range(20, 30), "contradicted"),
    # the same share of never in both groups, reached epochs interleaved
    ([5, 7, 9, 11, 13, NEVER, NEVER, NEVER, NEVER, NEVER], [6, 8, 10, 12, 14, NEVER, NEVER, NEVER, NEVER, NEVER],
     "inconclusive"),
])
def test_epochs_to_80_never_is_the_slowest_in_a_two_sample_claim(a, b, expected):
    ps = frame(E80, a=list(a), b=list(b))
    assert verdict(claim(compare_to="b", direction="less", metric=E80), ps) == expected
    flipped = {"supported": "contradicted", "contradicted": "supported"}.get(expected, expected)
    assert verdict(claim(compare_to="b", direction="greater", metric=E80), ps) == flipped


@pytest.mark.parametrize("values, direction, expected", [
    ([NEVER] * N, "less", "contradicted"),  # "within 20 epochs": none ever got there
    ([NEVER] * N, "greater", "supported"),  # "not within 20 epochs"
    ([*range(5, 19), NEVER], "less", "supported"),  # one never among 15 seeds, the others fast
    ([30, 35, NEVER, NEVER, NEVER, 40, 45, NEVER, NEVER, NEVER], "less", "contradicted"),
])
def test_epochs_to_80_never_in_a_one_sample_claim(values, direction, expected):
    assert verdict(claim(direction=direction, threshold=20, metric=E80), frame(E80, a=values)) == expected


# --------------------------------------------------------------------------- diverged seeds
def test_diverged_seeds_do_not_change_a_verdict():
    # a is 0.1 above b on its 10 healthy seeds; 10 more seeds of a diverged and kept their last
    # finite (low) numbers: counted, they would make the claim contradicted
    a = np.concatenate([BASE + 0.1 + TINY, np.full(N, 0.5)])
    ps = frame(a=a, b=BASE, diverged={"a": {i: 3 for i in range(N, 2 * N)}})
    assert verdict(claim(compare_to="b", direction="greater"), ps) == "supported"
    assert verdict(claim(direction="greater", threshold=0.8), ps) == "supported"


def test_diverged_seeds_are_not_never_reaching_80():
    # 4 healthy seeds of a reach 80% by epoch 5, 6 diverged ones have no epochs_to_80 (NaN): counted
    # as 'never' (slower than every seed of b) they would leave "a reaches 80% sooner" inconclusive
    a = [2, 3, 4, 5] + [NEVER] * 6
    ps = frame(E80, a=a, b=range(20, 30), diverged={"a": {i: 7 for i in range(4, 10)}})
    assert verdict(claim(compare_to="b", direction="less", metric=E80), ps) == "supported"
