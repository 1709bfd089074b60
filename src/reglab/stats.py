"""Statistics for the report: confidence intervals, tests, effect sizes, claim checks.

Claims are checked declaratively from their config entry (no claim-specific code):

* a claim says ``D <direction> threshold`` where ``D`` is the per-seed ``metric`` of ``variant``
  (one-sample) or the shift between ``variant`` and ``compare_to`` (two-sample, ``a - b``);
* two-sample: Mann-Whitney U of ``a - threshold`` against ``b`` (primary: accuracies are
  discrete and bounded), Welch's t reported beside it; one-sample: Wilcoxon signed-rank of
  ``metric - threshold`` (exact for small n, ties included), one-sample t beside it;
* tests are one-sided: ``supported`` when significant at ``alpha`` in the claimed direction,
  ``contradicted`` when significant in the opposite direction, else ``inconclusive``;
* ``epochs_to_80`` of a seed that never reached 80% counts as +inf (worse than any epoch) in
  the rank tests; t-tests and means use the seeds that reached it;
* fewer than 3 values in a group, or no data, gives ``inconclusive`` without a test.

Equivalence claims (``equivalence: delta`` instead of ``direction``) say there is no practical
difference: ``|D - threshold| < delta`` (two-sample: ``D`` is the difference of the means,
one-sample: the mean). They are tested with TOST, two one-sided Welch t-tests (one-sample: two
one-sided one-sample t-tests) of ``D - threshold > -delta`` and ``D - threshold < +delta``; the
TOST p is the larger of the two. We use t-tests, not rank tests, because the equivalence margin is
a shift of the *means* in the metric's units, which a rank test does not estimate. ``equivalent``
when the TOST p is below ``alpha``, else ``not shown equivalent`` (also when too few seeds, or when
a seed never reached the metric's event, e.g. ``epochs_to_80`` = never: the mean is then unbounded).

Multiple claims (:func:`adjust_claims`, over all claims of a report; :func:`check_claim` alone
leaves the raw p-values as the adjusted ones): ``claims_correction`` is ``holm`` (Holm-Bonferroni,
family-wise error rate; the default), ``bh`` (Benjamini-Hochberg, false discovery rate; scipy's
``false_discovery_control``) or ``none``. Each directional claim has two one-sided p-values; the
claimed-direction p-values (with the TOST p of the equivalence claims) are corrected as one family
and the opposite-direction p-values as another, each over the claims that were tested (claims with
too few seeds have no p and are left out). So the error rate of ``supported``/``equivalent``
verdicts is controlled at alpha, and that of ``contradicted`` verdicts at alpha, as a single claim
tests each direction at alpha. Verdicts use the adjusted p-values, each against its claim's alpha.

Effect and power: each tested claim reports the observed shift ``D - threshold`` (two-sample: the
difference of the means with its Welch 95% CI; one-sample: mean minus threshold with its t CI,
finite values only) and the seeds per variant a one-sided t-test at the claim's alpha needs for
80% power if the true shift and sd were the observed ones (:func:`seeds_for_power`: noncentral t,
equal group sizes, the pooled sd; n increased until the power is reached). For an equivalence
claim it is the seeds TOST needs (a lower bound of its power: P(both tests reject) >= 1 - P(first
fails) - P(second fails)) if the true shift were the observed one. A shift of ~0 (or, for
equivalence, an observed shift outside +-delta) gives None: no number of seeds is expected to
decide it at that effect. The power is for the uncorrected alpha and the t-test, an approximation
for the rank tests the verdicts use.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as st

from .contract import CLAIM_METRICS, METRICS

MIN_N = 3
_OPPOSITE = {"greater": "less", "less": "greater"}
CORRECTIONS = ("holm", "bh", "none")
POWER = 0.8
MAX_SEEDS = 100_000  # seeds_for_power gives up (None) beyond this
UNDECIDED = ("inconclusive", "not shown equivalent")
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # bootstrap CIs are deterministic: the same values give the same interval
MW_POWER_RESAMPLES = 400
MW_MAX_SEEDS = 200  # the resampling power search gives up (None) beyond this


# --------------------------------------------------------------------------- descriptive
def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t confidence interval of the finite values (NaN bounds when n < 2)."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    m = float(x.mean())
    if x.size == 1:
        return (m, math.nan, math.nan)
    half = float(st.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return (m, m - half, m + half)


def _finite(x) -> np.ndarray:
    """The finite entries of ``x`` as a float array."""
    x = np.asarray(x, dtype=float).ravel()
    return x[np.isfinite(x)]


def std(values) -> float:
    """Sample standard deviation (ddof 1) of the finite values; NaN when fewer than 2."""
    x = _finite(values)
    return float(x.std(ddof=1)) if x.size > 1 else math.nan


def std_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Sample standard deviation (ddof 1) of the finite values and its chi-square confidence interval
    (exact for normal data: (n - 1) s^2 / sigma^2 ~ chi2(n - 1)); NaNs when fewer than 2."""
    x = _finite(values)
    if x.size < 2:
        return (math.nan, math.nan, math.nan)
    s, df = float(x.std(ddof=1)), x.size - 1
    low = s * math.sqrt(df / st.chi2.ppf(0.5 + level / 2, df))
    high = s * math.sqrt(df / st.chi2.ppf(0.5 - level / 2, df))
    return (s, low, high)


def value_range(values) -> tuple[float, float]:
    """(min, max) of the finite values; NaNs when there are none."""
    x = _finite(values)
    return (float(x.min()), float(x.max())) if x.size else (math.nan, math.nan)


def iqm(values) -> float:
    """Interquartile mean of the finite values: the mean of the middle 50%, 25% cut from each end
    (``scipy.stats.trim_mean(x, 0.25)``, as rliable computes it); NaN when there are none."""
    x = _finite(values)
    return float(st.trim_mean(x, 0.25)) if x.size else math.nan


def _iqm_axis(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return st.trim_mean(x, 0.25, axis=axis)


_BOOTSTRAP_STATS = {"mean": np.mean, "iqm": _iqm_axis}


def bootstrap_ci(values, statistic: str = "mean", level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI (``scipy.stats.bootstrap``, :data:`BOOTSTRAP_RESAMPLES` resamples, a
    fixed seed) of the ``mean`` or ``iqm`` of the finite values, as rliable reports them; NaNs when
    fewer than 2 values; a point when all are equal."""
    x = _finite(values)
    if x.size < 2:
        return (math.nan, math.nan)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    r = st.bootstrap((x,), _BOOTSTRAP_STATS[statistic], n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=level,
                     method="percentile", vectorized=True, rng=np.random.default_rng(BOOTSTRAP_SEED))
    return (float(r.confidence_interval.low), float(r.confidence_interval.high))


def _cles_axis(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
    gt = (a[..., :, None] > b[..., None, :]).mean(axis=(-1, -2))
    eq = (a[..., :, None] == b[..., None, :]).mean(axis=(-1, -2))
    return gt + 0.5 * eq


def prob_improvement_ci(a, b, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of P(A > B) + P(A = B)/2 (rliable's probability of improvement),
    resampling each group independently; ``inf`` ("never") values keep their rank. NaNs when a group
    has fewer than 2 values."""
    a = np.asarray(a, float)[~np.isnan(np.asarray(a, float))]
    b = np.asarray(b, float)[~np.isnan(np.asarray(b, float))]
    if a.size < 2 or b.size < 2:
        return (math.nan, math.nan)
    a, b = _rank_safe(a, b)
    if np.unique(np.concatenate([a, b])).size == 1:
        return (0.5, 0.5)
    r = st.bootstrap((a, b), _cles_axis, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=level,
                     method="percentile", vectorized=True, paired=False, rng=np.random.default_rng(BOOTSTRAP_SEED))
    return (float(r.confidence_interval.low), float(r.confidence_interval.high))


def mann_whitney_power(a, b, n: int, alpha: float, alternative: str,
                       resamples: int = MW_POWER_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> float:
    """Power of a one-sided Mann-Whitney U test at ``alpha`` with ``n`` seeds per variant if the
    per-seed values were drawn from the observed ones (each group resampled with replacement):
    the share of ``resamples`` simulated experiments that reject."""
    ra, rb = _rank_safe(np.asarray(a, float), np.asarray(b, float))
    rng = np.random.default_rng(seed)
    xa = rng.choice(ra, size=(resamples, n), replace=True)
    xb = rng.choice(rb, size=(resamples, n), replace=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = st.mannwhitneyu(xa, xb, alternative=alternative, axis=1, method="asymptotic").pvalue
    return float(np.mean(np.nan_to_num(p, nan=1.0) < alpha))


def mw_seeds_for_power(a, b, alpha: float, alternative: str, power: float = POWER,
                       max_seeds: int = MW_MAX_SEEDS) -> int | None:
    """Smallest n (>= MIN_N) at which :func:`mann_whitney_power` reaches ``power`` (Colas et al.'s
    question, answered for the rank test the verdicts use, by resampling the observed values);
    None when even ``max_seeds`` does not (or a group has fewer than 2 values). Power grows with n,
    so a doubling search then bisection finds it."""
    a = np.asarray(a, float)[~np.isnan(np.asarray(a, float))]
    b = np.asarray(b, float)[~np.isnan(np.asarray(b, float))]
    if a.size < 2 or b.size < 2:
        return None
    ok = lambda n: mann_whitney_power(a, b, n, alpha, alternative) >= power  # noqa: E731
    lo, hi = MIN_N - 1, MIN_N
    while not ok(hi):
        if hi >= max_seeds:
            return None
        lo, hi = hi, min(max_seeds, hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _degenerate_p(diff: float, alternative: str) -> tuple[float, float]:
    """(statistic, p) in the zero-variance limit of a t-test with mean difference ``diff``."""
    if diff == 0:
        return 0.0, (1.0 if alternative == "two-sided" else 0.5)
    stat = math.copysign(math.inf, diff)
    if alternative == "two-sided":
        return stat, 0.0
    return stat, 0.0 if (diff > 0) == (alternative == "greater") else 1.0


# --------------------------------------------------------------------------- t-tests
def welch_t(a, b, alternative: str = "two-sided") -> dict:
    """Welch's unequal-variance t-test on the finite values: {statistic, p_value, df}.

    Zero variance in both groups gives the limit (t = +-inf, p = 0 or 1; equal means t = 0).
    """
    a, b = _finite(a), _finite(b)
    if a.size < 2 or b.size < 2:
        return {"statistic": math.nan, "p_value": math.nan, "df": math.nan}
    if a.var(ddof=1) + b.var(ddof=1) == 0:
        stat, p = _degenerate_p(float(a.mean() - b.mean()), alternative)
        return {"statistic": stat, "p_value": p, "df": math.nan}
    r = st.ttest_ind(a, b, equal_var=False, alternative=alternative)
    return {"statistic": float(r.statistic), "p_value": float(r.pvalue), "df": float(r.df)}


def one_sample_t(x, mu: float = 0.0, alternative: str = "two-sided") -> dict:
    """One-sample t-test of the finite values against ``mu``: {statistic, p_value, df}."""
    x = _finite(x)
    if x.size < 2:
        return {"statistic": math.nan, "p_value": math.nan, "df": math.nan}
    if x.var(ddof=1) == 0:
        stat, p = _degenerate_p(float(x.mean() - mu), alternative)
        return {"statistic": stat, "p_value": p, "df": float(x.size - 1)}
    r = st.ttest_1samp(x, mu, alternative=alternative)
    return {"statistic": float(r.statistic), "p_value": float(r.pvalue), "df": float(x.size - 1)}


# --------------------------------------------------------------------------- rank tests
def _rank_safe(*arrays: np.ndarray) -> list[np.ndarray]:
    """Replace +-inf by finite values beyond every finite value (same ranks, no inf arithmetic)."""
    allv = np.concatenate([np.asarray(a, float) for a in arrays])
    fin = allv[np.isfinite(allv)]
    big = (float(np.abs(fin).max()) if fin.size else 0.0) * 2 + 1.0
    return [np.where(np.isinf(a), np.sign(a) * big, a) for a in arrays]


def common_language(a, b) -> float:
    """P(A > B) + P(A = B)/2 over all pairs (the common-language effect size, = U_a / (n_a n_b))."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0 or b.size == 0:
        return math.nan
    gt = (a[:, None] > b[None, :]).sum()
    eq = (a[:, None] == b[None, :]).sum()
    return float((gt + 0.5 * eq) / (a.size * b.size))


def rank_biserial(a, b) -> float:
    """Rank-biserial correlation P(A > B) - P(A < B), in [-1, 1]."""
    return 2 * common_language(a, b) - 1


def mann_whitney(a, b, alternative: str = "two-sided") -> dict:
    """Mann-Whitney U test (scipy; inf allowed): {statistic (U of a), p_value, rank_biserial, cles}."""
    a = np.asarray(a, float)[~np.isnan(np.asarray(a, float))]
    b = np.asarray(b, float)[~np.isnan(np.asarray(b, float))]
    out = {"statistic": math.nan, "p_value": math.nan, "rank_biserial": math.nan, "cles": math.nan}
    if a.size == 0 or b.size == 0:
        return out
    cles = common_language(a, b)
    out.update(cles=cles, rank_biserial=2 * cles - 1, statistic=cles * a.size * b.size)
    ra, rb = _rank_safe(a, b)
    if np.unique(np.concatenate([ra, rb])).size == 1:
        out["p_value"] = 1.0  # every value tied: U is the same under every permutation
    else:
        out["p_value"] = float(st.mannwhitneyu(ra, rb, alternative=alternative).pvalue)
    return out


def wilcoxon_signed_rank(x, mu: float = 0.0, alternative: str = "two-sided") -> dict:
    """Wilcoxon signed-rank test of ``x - mu`` (zeros dropped; scipy, exact when small).

    Returns {statistic (W+, sum of ranks of positive differences), p_value, rank_biserial
    (matched pairs: (W+ - W-) / (W+ + W-)), n_nonzero}. All differences zero gives p = 1.
    """
    x = np.asarray(x, float)
    d = x[~np.isnan(x)] - mu
    d = d[d != 0]
    out = {"statistic": 0.0, "p_value": 1.0, "rank_biserial": 0.0, "n_nonzero": int(d.size)}
    if d.size == 0:
        return out
    (ds,) = _rank_safe(d)
    ranks = st.rankdata(np.abs(ds))
    w_plus, w_minus = float(ranks[ds > 0].sum()), float(ranks[ds < 0].sum())
    out.update(statistic=w_plus, rank_biserial=(w_plus - w_minus) / (w_plus + w_minus))
    out["p_value"] = float(st.wilcoxon(ds, alternative=alternative, zero_method="wilcox").pvalue)
    return out


# --------------------------------------------------------------------------- effect sizes
def cohens_d(a, b) -> float:
    """Cohen's d with the pooled standard deviation, on finite values (+-inf when it is zero)."""
    a, b = _finite(a), _finite(b)
    if a.size + b.size < 3 or a.size == 0 or b.size == 0:
        return math.nan
    pooled = ((a.size - 1) * a.var(ddof=1 if a.size > 1 else 0)
              + (b.size - 1) * b.var(ddof=1 if b.size > 1 else 0)) / (a.size + b.size - 2)
    diff = float(a.mean() - b.mean())
    if pooled == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(pooled)


def hedges_g(a, b) -> float:
    """Hedges' g: Cohen's d times the small-sample correction 1 - 3 / (4 (n_a + n_b) - 9)."""
    n = _finite(a).size + _finite(b).size
    d = cohens_d(a, b)
    return d * (1 - 3 / (4 * n - 9)) if n > 2 else math.nan


def cohens_d_one_sample(x, mu: float = 0.0) -> float:
    """(mean - mu) / sd of the finite values (+-inf when sd is zero and the mean differs)."""
    x = _finite(x)
    if x.size < 2:
        return math.nan
    diff, sd = float(x.mean() - mu), float(x.std(ddof=1))
    if sd == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / sd


# --------------------------------------------------------------------------- multiple testing
def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down; NaN entries stay NaN and are not counted).

    Sorted ascending, the i-th smallest of m gets ``max_{j <= i} min(1, (m - j + 1) p_(j))``.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    running = 0.0
    for rank, idx in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (scipy's ``false_discovery_control``; NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = st.false_discovery_control(p[ok], method="bh")
    return out


def adjust_p(p_values, method: str = "holm") -> np.ndarray:
    """Adjusted p-values by ``method``: holm, bh or none (NaN entries are left out of the family)."""
    if method == "holm":
        return holm(p_values)
    if method == "bh":
        return benjamini_hochberg(p_values)
    if method == "none":
        return np.asarray(p_values, dtype=float).copy()
    raise ValueError(f"unknown correction {method!r}; expected one of {CORRECTIONS}")


# --------------------------------------------------------------------------- equivalence and power
def tost(a, b=None, delta: float = 0.0, mu: float = 0.0) -> dict:
    """TOST of ``|mean(a) - mean(b) - mu| < delta`` (Welch) or, without ``b``, ``|mean(a) - mu| < delta``.

    Returns {p_value (the larger one-sided p), p_lower (H0: shift <= -delta), p_upper (H0: shift >= delta)}.
    """
    a = _finite(a)
    if b is None:
        lower = one_sample_t(a, mu - delta, "greater")["p_value"]
        upper = one_sample_t(a, mu + delta, "less")["p_value"]
    else:
        lower = welch_t(a - mu + delta, b, "greater")["p_value"]
        upper = welch_t(a - mu - delta, b, "less")["p_value"]
    return {"p_value": max(lower, upper) if not (math.isnan(lower) or math.isnan(upper)) else math.nan,
            "p_lower": lower, "p_upper": upper}


def shift_ci(a, b=None, mu: float = 0.0, level: float = 0.95) -> dict:
    """Observed shift (mean(a) - mean(b), or mean(a) without ``b``) minus ``mu``, its t CI (Welch for
    two samples) and the sd used for power (pooled for two samples), on finite values."""
    a = _finite(a)
    out = {"shift": math.nan, "shift_low": math.nan, "shift_high": math.nan, "sd": math.nan}
    if b is None:
        if a.size < 2:
            return out
        m, lo, hi = mean_ci(a, level)
        return {"shift": m - mu, "shift_low": lo - mu, "shift_high": hi - mu, "sd": float(a.std(ddof=1))}
    b = _finite(b)
    if a.size < 2 or b.size < 2:
        return out
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean()) - mu
    pooled = math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    if va + vb == 0:
        return {"shift": diff, "shift_low": diff, "shift_high": diff, "sd": 0.0}
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = float(st.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb))
    return {"shift": diff, "shift_low": diff - half, "shift_high": diff + half, "sd": pooled}


def t_power(n, effect: float, alpha: float, two_sample: bool = True, delta: float | None = None):
    """Power of a one-sided t-test (or, with ``delta``, of TOST, as a lower bound) at ``n`` per group.

    ``effect`` is the true shift in sd units (``delta`` too); two-sample: df = 2n - 2 and noncentrality
    ``effect * sqrt(n / 2)``; one-sample: df = n - 1 and ``effect * sqrt(n)``.
    """
    n = np.asarray(n, dtype=float)
    df = 2 * n - 2 if two_sample else n - 1
    scale = np.sqrt(n / 2) if two_sample else np.sqrt(n)
    crit = st.t.ppf(1 - alpha, df)
    if delta is None:
        return st.nct.sf(crit, df, abs(effect) * scale)
    # P(T_lower > crit and T_upper < -crit) >= P(T_upper < -crit) - P(T_lower <= crit)
    low = st.nct.cdf(crit, df, (effect + delta) * scale)
    up = st.nct.cdf(-crit, df, (effect - delta) * scale)
    return np.clip(up - low, 0.0, 1.0)


def seeds_for_power(shift: float, sd: float, alpha: float, power: float = POWER, two_sample: bool = True,
                    delta: float | None = None) -> int | None:
    """Smallest n (seeds per variant, >= MIN_N) at which a one-sided t-test at ``alpha`` (with ``delta``:
    TOST with margin ``delta``) reaches ``power`` when the true shift and sd are ``shift`` and ``sd``.

    None when no number of seeds is expected to decide it: a shift of ~0 (or, with ``delta``, one
    not inside +-delta), a NaN input, or more than :data:`MAX_SEEDS` needed.
    """
    if any(math.isnan(v) for v in (shift, sd)) or sd < 0:
        return None
    if delta is not None and abs(shift) >= delta:
        return None
    if sd == 0:
        return MIN_N if (delta is not None or shift != 0) else None
    effect = shift / sd
    d = None if delta is None else delta / sd
    if d is None and abs(effect) < 1e-9:
        return None
    lo = MIN_N
    while lo <= MAX_SEEDS:
        hi = min(MAX_SEEDS, lo * 4)
        n = np.arange(lo, hi + 1)
        hit = np.flatnonzero(t_power(n, effect, alpha, two_sample, d) >= power)
        if hit.size:
            return int(n[hit[0]])
        lo = hi + 1
    return None


# --------------------------------------------------------------------------- claims
def metric_values(per_seed: pd.DataFrame, study: str | None, variant: str, metric: str) -> np.ndarray:
    """Per-seed values of ``metric`` for one variant; a "never" metric's missing values -> NEVER_VALUE.
    Diverged seeds (``diverged_epoch`` > 0) are left out."""
    rows = per_seed
    if "diverged_epoch" in rows.columns:
        rows = rows[pd.to_numeric(rows["diverged_epoch"], errors="coerce").fillna(0) == 0]
    if study is not None and "study" in rows.columns:
        rows = rows[rows["study"].astype(str) == str(study)]
    vals = pd.to_numeric(rows.loc[rows["variant"].astype(str) == str(variant), metric], errors="coerce")
    never = METRICS[metric].never
    if never is not None:
        vals = vals.fillna(never)
    return vals.dropna().to_numpy(dtype=float)


def _describe(x: np.ndarray, suffix: str) -> dict:
    """n, mean/std over finite values, median (inf allowed) and the count of infinite ("never")."""
    fin = x[np.isfinite(x)]
    return {
        f"n_{suffix}": int(x.size),
        f"mean_{suffix}": float(fin.mean()) if fin.size else math.nan,
        f"std_{suffix}": float(fin.std(ddof=1)) if fin.size > 1 else math.nan,
        f"median_{suffix}": float(np.median(x)) if x.size else math.nan,
        f"never_{suffix}": int(np.isinf(x).sum()),
    }


def _verdict(p_claim: float, p_opposite: float, alpha: float, equivalence: bool = False) -> str:
    """supported / contradicted / inconclusive from the two one-sided p-values; for an equivalence
    claim equivalent / not shown equivalent from the TOST p (``p_claim``)."""
    if equivalence:
        return "equivalent" if p_claim < alpha else "not shown equivalent"
    if p_claim < alpha:
        return "supported"
    if p_opposite < alpha:
        return "contradicted"
    return "inconclusive"


def _two_sample(a: np.ndarray, b: np.ndarray, alt: str, threshold: float, effects: bool = True) -> dict:
    """Mann-Whitney (primary) and Welch (secondary) on ``a - threshold`` vs ``b``."""
    shifted = a - threshold
    mw = mann_whitney(shifted, b, alt)
    return {
        "test": "Mann-Whitney U (one-sided)",
        "statistic": mw["statistic"],
        "p_value": mw["p_value"],
        "p_value_opposite": mann_whitney(shifted, b, _OPPOSITE[alt])["p_value"],
        "effect_size_name": "rank-biserial r",
        "effect_size": mw["rank_biserial"],
        "cles": mw["cles"],
        **dict(zip(("cles_low", "cles_high"),
                   prob_improvement_ci(shifted, b) if effects else (math.nan, math.nan))),
        "hedges_g": hedges_g(shifted, b),
        "cohens_d": cohens_d(shifted, b),
        "secondary_test": "Welch t (one-sided)",
        **{f"secondary_{k}": v for k, v in welch_t(shifted, b, alt).items()},
    }


def _one_sample(a: np.ndarray, alt: str, threshold: float) -> dict:
    """Wilcoxon signed-rank (primary) and one-sample t (secondary) of ``a - threshold``."""
    w = wilcoxon_signed_rank(a, threshold, alt)
    return {
        "test": "Wilcoxon signed-rank (one-sided)",
        "statistic": w["statistic"],
        "p_value": w["p_value"],
        "p_value_opposite": wilcoxon_signed_rank(a, threshold, _OPPOSITE[alt])["p_value"],
        "effect_size_name": "matched rank-biserial r",
        "effect_size": w["rank_biserial"],
        "cohens_d": cohens_d_one_sample(a, threshold),
        "secondary_test": "one-sample t (one-sided)",
        **{f"secondary_{k}": v for k, v in one_sample_t(a, threshold, alt).items()},
    }


def _equivalence(a: np.ndarray, b: np.ndarray | None, delta: float, threshold: float) -> dict:
    """TOST (Welch two-sample, or one-sample t) of ``|shift - threshold| < delta``."""
    r = tost(a, b, delta, threshold)
    both = "two one-sided Welch t-tests" if b is not None else "two one-sided one-sample t-tests"
    out = {"test": f"TOST ({both})", "statistic": math.nan, "p_value": r["p_value"],
           "p_value_opposite": math.nan, "p_lower": r["p_lower"], "p_upper": r["p_upper"]}
    if b is not None:
        out.update(effect_size_name="Hedges' g", effect_size=hedges_g(a - threshold, b))
    else:
        out.update(effect_size_name="Cohen's d", effect_size=cohens_d_one_sample(a, threshold))
    return out


def _check_one(claim: dict, per_seed: pd.DataFrame, effects: bool = True) -> dict:
    """Test one config claim (a single test) against per-seed results; returns the verdict and its numbers.

    Alone it is a family of one: ``p_value_adjusted`` equals ``p_value`` (see :func:`adjust_claims`).
    """
    metric, alt = claim["metric"], claim.get("direction")
    delta = claim.get("equivalence")
    if metric not in CLAIM_METRICS:
        raise ValueError(f"claim {claim.get('id')!r}: unknown metric {metric!r}; expected one of {CLAIM_METRICS}")
    if delta is not None:
        if alt is not None:
            raise ValueError(f"claim {claim.get('id')!r}: an equivalence claim has no direction")
        if not float(delta) > 0:
            raise ValueError(f"claim {claim.get('id')!r}: equivalence must be > 0, not {delta!r}")
        delta = float(delta)
    elif alt not in _OPPOSITE:
        raise ValueError(f"claim {claim.get('id')!r}: direction must be 'greater' or 'less', not {alt!r}")
    threshold = float(claim.get("threshold", 0) or 0)
    alpha = float(claim.get("alpha", 0.05))
    other = claim.get("compare_to")
    a = metric_values(per_seed, claim.get("study"), claim["variant"], metric)
    b = metric_values(per_seed, claim.get("study"), other, metric) if other else np.array([])
    out = {
        "id": claim.get("id"), "text": claim.get("text", ""), "study": claim.get("study"),
        "variant": claim["variant"], "compare_to": other, "metric": metric, "direction": alt,
        "equivalence": delta, "threshold": threshold, "alpha": alpha,
        "kind": "two-sample" if other else "one-sample",
        "verdict": _verdict(math.nan, math.nan, alpha, delta is not None), "test": None, "statistic": math.nan,
        "p_value": math.nan, "p_value_opposite": math.nan, "p_value_adjusted": math.nan,
        "p_value_opposite_adjusted": math.nan, "correction": "none",
        "effect_size_name": None, "effect_size": math.nan, "note": "",
        "shift": math.nan, "shift_low": math.nan, "shift_high": math.nan, "sd": math.nan, "seeds_needed": None,
        "seeds_needed_mw": None,
        **_describe(a, "a"), **_describe(b, "b"),
    }
    sizes = [a.size, b.size] if other else [a.size]
    if min(sizes) < MIN_N:
        out["note"] = f"too few seeds for a test (n = {', '.join(map(str, sizes))}; need {MIN_N})"
        return out
    out.update(shift_ci(a, b if other else None, threshold))
    if delta is not None:
        if np.isinf(a).any() or np.isinf(b).any():
            out["note"] = "some seeds never reached it: the mean is unbounded, equivalence cannot be shown"
            return out
        out.update(_equivalence(a, b if other else None, delta, threshold))
    else:
        out.update(_two_sample(a, b, alt, threshold, effects) if other else _one_sample(a, alt, threshold))
    out["p_value_adjusted"], out["p_value_opposite_adjusted"] = out["p_value"], out["p_value_opposite"]
    out["verdict"] = _verdict(out["p_value"], out["p_value_opposite"], alpha, delta is not None)
    out["seeds_needed"] = seeds_for_power(out["shift"], out["sd"], alpha, two_sample=bool(other), delta=delta)
    if other and delta is None and effects:
        out["seeds_needed_mw"] = mw_seeds_for_power(a - threshold, b, alpha, alt if out["shift"] * (
            1 if alt == "greater" else -1) >= 0 else _OPPOSITE[alt])
    return out


def _interval_parts(claim: dict) -> list[dict]:
    """An ``interval: [lo, hi]`` claim as its two one-sided parts: above lo, and below hi."""
    lo, hi = (float(v) for v in claim["interval"])
    base = {k: v for k, v in claim.items() if k not in ("interval", "parts", "text", "id")}
    what = f"{claim['metric']}" + (f" shift over {claim['compare_to']}" if claim.get("compare_to") else "")
    return [{**base, "id": f"{claim.get('id')}>lo", "text": f"{what} above {lo:g}", "direction": "greater",
             "threshold": lo},
            {**base, "id": f"{claim.get('id')}<hi", "text": f"{what} below {hi:g}", "direction": "less",
             "threshold": hi}]


def _expand_parts(claim: dict) -> list[dict]:
    """The one-test parts of a claim: each of ``parts`` (an ``interval`` part gives two), or the claim."""
    if "parts" not in claim:
        return _interval_parts(claim) if "interval" in claim else [claim]
    out = []
    for i, part in enumerate(claim["parts"]):
        part = {"study": claim.get("study"), "alpha": claim.get("alpha", 0.05), **part,
                "id": f"{claim.get('id')}[{i}]"}
        if "interval" in part:
            text = part.get("text", "")
            out += [{**q, "text": f"{text} ({q['text']})" if text else q["text"]} for q in _interval_parts(part)]
        else:
            out.append(part)
    return out


def _against(r: dict) -> bool:
    """Whether a directional part's observed shift points against its claimed direction."""
    return r.get("direction") in _OPPOSITE and (r["shift"] < 0 if r["direction"] == "greater" else r["shift"] > 0)


def _parts_seeds_needed(results: list[dict], key: str) -> int | None:
    """Seeds per variant to decide a claim of several parts, if the observed effects were the true
    ones: a part whose shift points against the claim decides it (contradicted) by itself, the
    one needing fewest seeds first; otherwise every part must be supported, so the most any needs."""
    against = [r[key] for r in results if _against(r) and r.get(key) is not None]
    if against:
        return min(against)
    values = [r.get(key) for r in results]
    return None if None in values else max(values)


def check_claim(claim: dict, per_seed: pd.DataFrame, effects: bool = True) -> dict:
    """Test a claim, of one test or of several parts (``parts``, or an ``interval``).

    A claim of several parts is supported when every part is (an intersection-union test: its
    claimed-direction p is the largest of the parts' p, valid at alpha without correction), and
    contradicted when any part is contradicted (the parts' opposite-direction p-values,
    Bonferroni-corrected within the claim: the smallest times the number of parts). Its ``parts``
    holds each part's own result and verdict (uncorrected). ``effects=False`` leaves out the
    resampling estimates (the bootstrap CI of P(A > B) and the Mann-Whitney seeds for power): a
    sequential look needs the p-values only.
    """
    parts = _expand_parts(claim)
    if len(parts) == 1 and parts[0] is claim:
        return _check_one(claim, per_seed, effects)
    results = [_check_one(part, per_seed, effects) for part in parts]
    first = results[0]
    tested = all(r["test"] for r in results)
    p_claim = max(r["p_value"] for r in results) if tested else math.nan
    opp = [r["p_value_opposite"] for r in results if not math.isnan(r["p_value_opposite"])]
    p_opp = min(1.0, min(opp) * len(results)) if opp else math.nan
    alpha = float(claim.get("alpha", 0.05))
    needed = {key: _parts_seeds_needed(results, key) for key in ("seeds_needed", "seeds_needed_mw")}
    out = {
        **first, "id": claim.get("id"), "text": claim.get("text", ""), "alpha": alpha, "parts": results,
        "kind": f"{len(results)} parts", "test": "intersection-union of the parts" if tested else None,
        "p_value": p_claim, "p_value_opposite": p_opp, "p_value_adjusted": p_claim, "p_value_opposite_adjusted": p_opp,
        "note": "; ".join(f"part {i + 1}: {r['note']}" for i, r in enumerate(results) if r["note"]),
        **needed,
    }
    out["equivalence"] = None
    out["verdict"] = _verdict(p_claim, p_opp, alpha)  # NaN p (a part untested): inconclusive
    return out


def adjust_claims(results: list[dict], method: str = "holm", scale: float = 1.0) -> list[dict]:
    """Correct the p-values of all claims of a report for multiplicity and redo their verdicts.

    ``results`` are :func:`check_claim` results; returns copies with ``p_value_adjusted``,
    ``p_value_opposite_adjusted``, ``correction`` and the verdict from the adjusted p-values. The
    claimed-direction (and TOST) p-values are one family, the opposite-direction ones another.
    ``scale`` (>= 1) multiplies the adjusted p-values: these claims' share of alpha is 1 / scale
    (the rest goes to sequentially tested claims, :func:`reglab.looks.sequential_alpha`).
    """
    claimed = np.minimum(1.0, adjust_p([r["p_value"] for r in results], method) * scale)
    opposite = np.minimum(1.0, adjust_p([r["p_value_opposite"] for r in results], method) * scale)
    out = []
    for r, p, q in zip(results, claimed, opposite):
        r = {**r, "p_value_adjusted": float(p), "p_value_opposite_adjusted": float(q), "correction": method}
        if r["test"]:
            r["verdict"] = _verdict(r["p_value_adjusted"], r["p_value_opposite_adjusted"], r["alpha"],
                                    r.get("equivalence") is not None)
        out.append(r)
    return out


# --------------------------------------------------------------------------- published
def compare_published(published: dict, summary: pd.DataFrame, per_seed: pd.DataFrame | None = None,
                      tol: float = 5e-4) -> pd.DataFrame:
    """Published single-run accuracies beside our seeds' spread, one row per study/variant/split.

    ``published`` is the published YAML (its ``studies`` mapping, or that mapping itself:
    study -> variant -> {train, test}). Only variants present in ``summary`` are compared, in its
    order. Values come from ``per_seed`` when given, else from summary's mean/std/min/max.
    ``within_range``: the published value lies within our seeds' min..max, widened by ``tol``
    because published accuracies are rounded to 3 decimals (29/30 is published as 0.967).
    """
    studies = published.get("studies", published) if isinstance(published, dict) else {}
    rows = []
    for _, s in summary.iterrows():
        study = str(s["study"]) if "study" in summary.columns else None
        pub = (studies.get(study) if study is not None else None) or {}
        entry = pub.get(str(s["variant"]))
        if not isinstance(entry, dict):
            continue
        for split in ("train", "test"):
            if split not in entry:
                continue
            col = f"final_{split}_acc"
            if per_seed is not None:
                x = metric_values(per_seed, study, str(s["variant"]), col)
                n, mean = x.size, float(x.mean()) if x.size else math.nan
                std = float(x.std(ddof=1)) if x.size > 1 else math.nan
                lo, hi = (float(x.min()), float(x.max())) if x.size else (math.nan, math.nan)
            else:
                n, mean, std = int(s["n"]), float(s[f"{col}_mean"]), float(s[f"{col}_std"])
                lo, hi = float(s[f"{col}_min"]), float(s[f"{col}_max"])
            value = float(entry[split])
            rows.append({
                "study": study, "variant": str(s["variant"]), "split": split, "published": value,
                "mean": mean, "std": std, "min": lo, "max": hi, "n": n,
                "delta": mean - value, "within_range": bool(lo - tol <= value <= hi + tol),
            })
    cols = ["study", "variant", "split", "published", "mean", "std", "min", "max", "n", "delta", "within_range"]
    return pd.DataFrame(rows, columns=cols)
