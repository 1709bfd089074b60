"""Sequential seeding (issue 13 item 2): group-sequential boundaries, decisions and error rates.

Reference values are published ones (Jennison & Turnbull; gsDesign ``sfLDOF``, one-sided
alpha = 0.025, equally spaced looks) or come from independent computations in this file (Monte
Carlo of the canonical Brownian process, scipy's multivariate normal CDF), never from the module.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as st

from reglab import sequential as sq
from reglab.sequential import (BoundaryTrace, Schedule, boundaries, decide, exit_probabilities, expected_seeds,
                               lan_demets_obf, trace_claim, z_from_p)

#: Lan-DeMets O'Brien-Fleming upper boundaries, one-sided alpha = 0.025, K equally spaced looks
PUBLISHED = {
    2: (2.9626, 1.9686),
    3: (3.7103, 2.5114, 1.9930),
    4: (4.3326, 2.9631, 2.3590, 2.0141),
    5: (4.8769, 3.3569, 2.6803, 2.2898, 2.0310),
}


def brownian_z(t, n: int, seed: int, drift: float = 0.0) -> np.ndarray:
    """n paths of the canonical process at fractions t: Z_k = S(t_k) / sqrt(t_k), S Brownian with drift."""
    t = np.asarray(t, float)
    dt = np.diff(np.concatenate([[0.0], t]))
    rng = np.random.default_rng(seed)
    s = np.cumsum(rng.standard_normal((n, t.size)) * np.sqrt(dt) + drift * dt, axis=1)
    return s / np.sqrt(t)


def first_crossing(z: np.ndarray, c: np.ndarray) -> np.ndarray:
    """0-based look of the first Z_k >= c_k per path, -1 when none."""
    hit = z >= c
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)


# --------------------------------------------------------------------------- spending, boundaries
@pytest.mark.parametrize("k", sorted(PUBLISHED))
def test_published_boundaries(k):
    c = boundaries(np.arange(1, k + 1) / k, 0.025)
    np.testing.assert_allclose(c, PUBLISHED[k], atol=1e-3)


def test_spending_function():
    t = np.array([0.0, 0.2, 0.5, 1.0])
    for alpha in (0.01, 0.025, 0.05, 0.1):
        a = lan_demets_obf(t, alpha)
        assert a[0] == 0 and a[-1] == pytest.approx(alpha, rel=1e-12)
        assert np.all(np.diff(a) > 0)
        assert lan_demets_obf(1.0, alpha, sides=2) == pytest.approx(alpha, rel=1e-12)
    # one-sided form: z_{1-alpha/2} in the numerator (gsDesign sfLDOF); alpha = 0.025 at t = 0.5:
    # z_{0.9875} = 2.2414, 2.2414 / sqrt(0.5) = 3.1698, 2 * (1 - Phi(3.1698)) = 0.001525
    assert lan_demets_obf(0.5, 0.025) == pytest.approx(0.001525, rel=2e-3)
    # two-sided Lan-DeMets (1983), alpha = 0.05 in total: 2 - 2 Phi(1.96 / sqrt(0.5)) = 0.005574
    assert lan_demets_obf(0.5, 0.05, sides=2) == pytest.approx(0.005574, rel=2e-3)
    with pytest.raises(ValueError, match="sides"):
        lan_demets_obf(0.5, 0.05, sides=3)


@pytest.mark.parametrize("t,alpha", [((0.2, 0.4, 0.6, 0.8, 1.0), 0.025), ((0.25, 0.6, 1.0), 0.05),
                                     ((0.5, 1.0), 0.05)])
def test_cumulative_spend_matches_mvn_cdf(t, alpha):
    """1 - P(Z_1 < c_1, ..., Z_k < c_k) under Cov(Z_j, Z_k) = sqrt(t_j / t_k) is alpha(t_k) (Genz's
    algorithm in scipy, independent of the module's recursion)."""
    t = np.array(t)
    c = boundaries(t, alpha)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    for k in range(2, t.size + 1):
        spent = 1 - st.multivariate_normal.cdf(c[:k], np.zeros(k), cov[:k, :k], maxpts=200_000 * k, abseps=1e-7,
                                               releps=1e-7, rng=np.random.default_rng(1))
        assert spent == pytest.approx(lan_demets_obf(t[k - 1], alpha), abs=2e-5)


@pytest.mark.parametrize("k,alpha", [(5, 0.025), (20, 0.05)])
def test_cumulative_spend_monte_carlo(k, alpha):
    """Cumulative share of null Brownian paths crossing by look j equals alpha(t_j), within 4 MC se."""
    t = np.arange(1, k + 1) / k
    c = boundaries(t, alpha)
    assert np.all(np.isfinite(c)) and np.all(np.diff(c) < 0) and c[-1] > st.norm.isf(alpha)
    n = 400_000
    first = first_crossing(brownian_z(t, n, seed=k), c)
    spent = lan_demets_obf(t, alpha)
    for j in range(k):
        share = np.mean((first >= 0) & (first <= j))
        se = math.sqrt(spent[j] * (1 - spent[j]) / n)
        assert abs(share - spent[j]) <= 4 * se + 1e-6, (j, share, spent[j])


def test_exit_probabilities_monte_carlo():
    """Exit probabilities across both boundaries with a drift match simulated Brownian paths."""
    s = Schedule(10, 10, 50)
    c = boundaries(s, 0.05)
    n, drift = 200_000, 1.5
    z = brownian_z(s.fractions, n, seed=3, drift=drift)
    up, lo = exit_probabilities(s, c, -c, drift)
    hit_up, hit_lo = z >= c, z <= -c
    hit = hit_up | hit_lo
    first = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
    rows = np.arange(n)
    for j in range(len(c)):
        mc_up = np.mean((first == j) & hit_up[rows, j])
        mc_lo = np.mean((first == j) & hit_lo[rows, j])
        assert abs(mc_up - up[j]) <= 4 * math.sqrt(up[j] * (1 - up[j]) / n) + 1e-5
        assert abs(mc_lo - lo[j]) <= 4 * math.sqrt(lo[j] * (1 - lo[j]) / n) + 1e-5
    n_seeds = np.where(first >= 0, np.array(s.looks)[first], s.max)
    assert expected_seeds(s, 0.05, drift) == pytest.approx(n_seeds.mean(), abs=4 * n_seeds.std() / math.sqrt(n))


def test_boundaries_refuse_bad_input():
    with pytest.raises(ValueError, match="increase"):
        boundaries((0.5, 0.5, 1.0), 0.05)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        boundaries((0.5, 1.2), 0.05)
    with pytest.raises(ValueError, match="alpha"):
        boundaries((0.5, 1.0), 0.5)
    # one look: the fixed-n one-sided test
    assert boundaries((1.0,), 0.05)[0] == pytest.approx(st.norm.isf(0.05))


# --------------------------------------------------------------------------- schedule
def test_schedule_looks_and_fractions():
    s = Schedule.from_config({"start": 10, "step": 10, "max": 100})
    assert s.n_looks == 10 and s.looks == tuple(range(10, 101, 10))
    assert s.fractions == pytest.approx([n / 100 for n in range(10, 101, 10)])
    # max not on the step grid: the last look is max, K = 1 + ceil((max - start) / step)
    s = Schedule(10, 30, 50)
    assert s.n_looks == 3 and s.looks == (10, 40, 50) and s.fractions == pytest.approx((0.2, 0.8, 1.0))
    s = Schedule(5, 1, 5)
    assert s.n_looks == 1 and s.looks == (5,) and s.fractions == (1.0,)
    s = Schedule(3, 4, 20)
    assert s.n_looks == 1 + math.ceil(17 / 4) and s.looks == (3, 7, 11, 15, 19, 20)
    assert s.look_of(15) == 4 and s.look_of(16) is None


@pytest.mark.parametrize("entry,key", [
    ({"start": 2, "step": 10, "max": 100}, "'start'"),
    ({"start": 10, "step": 0, "max": 100}, "'step'"),
    ({"start": 10, "step": 10, "max": 9}, "'max'"),
    ({"start": 10.5, "step": 10, "max": 100}, "'start'"),
    ({"start": 10, "step": True, "max": 100}, "'step'"),
    ({"start": 10, "max": 100}, "'step'"),
    ({"start": 10, "step": 10, "max": 100, "min": 3}, "'min'"),
])
def test_schedule_refuses_bad_entries(entry, key):
    with pytest.raises(ValueError, match=key):
        Schedule.from_config(entry)


# --------------------------------------------------------------------------- decisions
def test_z_from_p():
    assert z_from_p(0.5) == 0 and z_from_p(0.025) == pytest.approx(1.959964, abs=1e-6)
    assert z_from_p(1e-20) == pytest.approx(st.norm.isf(1e-20), rel=1e-9)  # no loss in the tail
    assert z_from_p(0.0) == sq.Z_CAP and z_from_p(1.0) == -sq.Z_CAP
    assert math.isnan(z_from_p(None)) and math.isnan(z_from_p(math.nan))
    np.testing.assert_allclose(z_from_p(np.array([0.05, 0.95])), [1.644854, -1.644854], atol=1e-6)
    with pytest.raises(ValueError, match="p-value"):
        z_from_p(1.5)


def test_decide_rules():
    t = (0.2, 0.4, 0.6, 0.8, 1.0)
    c = PUBLISHED[5]
    assert decide(c[0] + 0.01, 1, t, 0.025) == "supported"
    assert decide(c[0] - 0.01, 1, t, 0.025) == "continue"
    assert decide(-c[1] - 0.01, 2, t, 0.025) == "contradicted"
    assert decide(-c[1] + 0.01, 2, t, 0.025) == "continue"
    # the opposite direction uses its own z when given (discrete tests: p + p_opposite >= 1)
    assert decide(-3.0, 2, t, 0.025, z_opposite=c[1] - 0.01) == "continue"
    assert decide(-3.0, 2, t, 0.025, z_opposite=c[1] + 0.01) == "contradicted"
    assert decide(c[4] + 0.01, 5, t, 0.025) == "supported"
    assert decide(c[4] - 0.01, 5, t, 0.025) == "inconclusive"
    assert decide(math.nan, 3, t, 0.025) == "continue" and decide(None, 5, t, 0.025) == "inconclusive"
    # futility (non-binding): interim only, when neither direction reaches it
    assert decide(0.3, 2, t, 0.025, futility=0.5) == "inconclusive"
    assert decide(-0.6, 2, t, 0.025, futility=0.5) == "continue"
    assert decide(0.3, 2, t, 0.025) == "continue"
    assert decide(math.nan, 2, t, 0.025, futility=0.5) == "continue"
    # arrays: one decision each
    out = decide(np.array([5.0, 0.0, -5.0]), 1, t, 0.025)
    assert out.tolist() == ["supported", "continue", "contradicted"]
    # a schedule gives the fractions
    assert decide(2.0, 10, Schedule(10, 10, 100), 0.05) == "supported"
    for bad in (0, 6, 1.0):
        with pytest.raises(ValueError, match="look"):
            decide(1.0, bad, t, 0.025)
    with pytest.raises(ValueError, match="both"):
        decide(5.0, 1, t, 0.025, z_opposite=5.0)


# --------------------------------------------------------------------------- simulation
N_SIM = 4000
SCHEDULE = Schedule(10, 10, 100)


def simulate(a: np.ndarray, b: np.ndarray, alpha: float, test: str = "welch", futility=None):
    """Sequential decisions and stopping n for N_SIM experiments (rows of a, b: per-seed values of
    the two variants in seed order), plus the naive 'reject at alpha at any look' rate."""
    dec = np.full(a.shape[0], "continue", dtype=object)
    n_stop = np.zeros(a.shape[0], int)
    naive = np.zeros(a.shape[0], bool)
    for k, n in enumerate(SCHEDULE.looks):
        x, y = a[:, :n], b[:, :n]
        if test == "welch":
            p = st.ttest_ind(x, y, axis=1, equal_var=False, alternative="greater").pvalue
            p_opp = 1 - p
        else:
            p = st.mannwhitneyu(x, y, axis=1, alternative="greater", method="asymptotic").pvalue
            p_opp = st.mannwhitneyu(x, y, axis=1, alternative="less", method="asymptotic").pvalue
        naive |= p < alpha
        run = dec == "continue"
        dec[run] = decide(z_from_p(p[run]), k + 1, SCHEDULE, alpha, z_opposite=z_from_p(p_opp[run]),
                          futility=futility)
        n_stop[run] = n
    assert not np.any(dec == "continue")
    return dec, n_stop, naive


def null_data(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    shape = (N_SIM, SCHEDULE.max)
    if kind == "normal":
        return rng.normal(0.8, 0.05, shape), rng.normal(0.8, 0.05, shape)
    # accuracy-like: k/70 correct test points
    return rng.binomial(70, 0.9, shape) / 70, rng.binomial(70, 0.9, shape) / 70


@pytest.mark.parametrize("kind,test", [("normal", "welch"), ("accuracy", "welch"), ("accuracy", "mann-whitney")])
def test_null_error_rates(kind, test):
    """Same distribution for both variants: false supported (and contradicted) <= alpha + 3 MC se,
    while testing at alpha at every look clearly exceeds alpha."""
    alpha = 0.05
    se = math.sqrt(alpha * (1 - alpha) / N_SIM)
    a, b = null_data(kind, seed=11)
    dec, n_stop, naive = simulate(a, b, alpha, test)
    assert np.mean(dec == "supported") <= alpha + 3 * se
    assert np.mean(dec == "contradicted") <= alpha + 3 * se
    assert naive.mean() > alpha + 3 * se
    assert set(dec) <= {"supported", "contradicted", "inconclusive"}


def test_null_with_futility_saves_seeds():
    alpha = 0.05
    se = math.sqrt(alpha * (1 - alpha) / N_SIM)
    a, b = null_data("normal", seed=12)
    dec, n_stop, _ = simulate(a, b, alpha, futility=0.5)
    assert np.mean(dec == "supported") <= alpha + 3 * se
    assert np.mean(dec == "contradicted") <= alpha + 3 * se
    assert n_stop.mean() < 0.5 * SCHEDULE.max


def test_alternative_stops_early():
    """A true shift of 0.5 sd: mostly supported, on average well before max seeds, as predicted."""
    rng = np.random.default_rng(13)
    shape = (N_SIM, SCHEDULE.max)
    a, b = rng.normal(0.5, 1.0, shape), rng.normal(0.0, 1.0, shape)
    dec, n_stop, _ = simulate(a, b, 0.05)
    assert np.mean(dec == "supported") > 0.9
    assert np.mean(dec == "contradicted") < 0.001
    assert n_stop.mean() < 0.75 * SCHEDULE.max
    # the exact design calculation (z scale) agrees with the t-test simulation to a few seeds
    assert n_stop.mean() == pytest.approx(expected_seeds(SCHEDULE, 0.05, 0.5 * math.sqrt(SCHEDULE.max / 2)), abs=3)


# --------------------------------------------------------------------------- trace
def test_trace_claim_stops_and_serialises():
    s = {"start": 10, "step": 10, "max": 50}
    c = boundaries(Schedule(**s), 0.05)
    ps = [0.3, float(st.norm.sf(c[1] + 0.1)), 0.9]  # crosses at look 2; look 3 is ignored
    tr = trace_claim(ps, s, 0.05, claim_id="c1")
    assert tr.decision == "supported" and tr.stopped_at == 2 and tr.n_seeds == 20
    assert tr.decisions == ["continue", "supported", None, None, None]
    assert tr.z[2] is None and tr.z[1] == pytest.approx(c[1] + 0.1)
    assert tr.looks == [10, 20, 30, 40, 50] and tr.upper == pytest.approx(c) and tr.lower == pytest.approx(-c)
    d = json.loads(json.dumps(tr.to_dict(), allow_nan=False))
    assert d["claim_id"] == "c1" and d["schedule"] == s and d["z"][2] is None
    assert BoundaryTrace.from_dict(d).to_dict() == d
    # undecided so far; then inconclusive at the last look; the opposite family
    assert trace_claim([0.3, 0.4], s, 0.05).decision == "continue"
    tr = trace_claim([0.3, 0.4, 0.5, 0.45, 0.2], s, 0.05)
    assert tr.decision == "inconclusive" and tr.stopped_at == 5
    tr = trace_claim([0.999999], s, 0.05, p_values_opposite=[1e-6])
    assert tr.decision == "contradicted" and tr.stopped_at == 1 and tr.z_opposite[0] == pytest.approx(4.753, abs=1e-3)
    assert trace_claim([math.nan, None], s, 0.05).decisions[:2] == ["continue", "continue"]
    with pytest.raises(ValueError, match="looks"):
        trace_claim([0.5] * 6, s, 0.05)
