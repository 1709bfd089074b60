"""Sequential seeding: group-sequential claim tests that add seeds until a claim is decided.

A study declares a seed schedule ``{start, step, max}`` (:class:`Schedule`): look 1 checks its
claims at ``n_1 = start`` seeds per variant, every further look adds ``step`` seeds, the last look
is at ``max`` (``n_k = min(start + (k-1) step, max)``), so there are
``K = 1 + ceil((max - start) / step)`` looks. The information fraction of look k is
``t_k = n_k / max``: the information of a two-sample comparison with ``n`` seeds in each group (and
of a one-sample one with ``n`` seeds) grows in proportion to ``n``.

Design (one claim):

* **Two one-sided families, as in** :mod:`reglab.stats`. A directional claim has a claimed-direction
  one-sided p-value and an opposite-direction one. Each is turned into a z-score (below) and tested
  with its own group-sequential one-sided test at the claim's ``alpha``, with the same boundaries:
  ``supported`` when the claimed-direction z crosses the upper boundary, ``contradicted`` when the
  opposite-direction z does. So, as for a fixed number of seeds, P(``supported``) <= alpha when
  the claim is false at the boundary (no shift) and P(``contradicted``) <= alpha when it is true.
  Multiplicity over the claims of a report is not handled here: give each claim ``alpha / m``
  (Bonferroni over ``m`` claims) to control the family-wise error rate. (Holm's step-down with
  recycled alpha is valid for group-sequential tests only with extra care, Maurer & Bretz 2013.)
* **Spending function**: Lan-DeMets O'Brien-Fleming type, one-sided (:func:`lan_demets_obf`),
  ``alpha(t) = 2 (1 - Phi(z_{1-alpha/2} / sqrt(t)))``, the form of gsDesign's ``sfLDOF`` and of
  Jennison & Turnbull for one-sided tests. It is 0 at t = 0, increasing, and spends exactly alpha at
  t = 1 (``2 (1 - Phi(z_{1-alpha/2})) = alpha``). It spends almost nothing early (five looks at
  alpha = 0.025: z >= 4.88 is needed at 20% of the seeds), so the last boundary stays close to the
  fixed-n ``z_{1-alpha}`` and little power is lost against running all ``max`` seeds at once.
  (``1 - Phi(z_{1-alpha} / sqrt(t))``, the per-tail half of the two-sided Lan-DeMets function at
  level 2 alpha, also spends alpha at t = 1 but spends more early: 4.38 instead of 4.88 at the first
  of five looks. The published one-sided boundaries, 4.877 3.357 2.680 2.290 2.031 for five looks
  at alpha = 0.025, are those of the form used here.)
* **Boundaries** (:func:`boundaries`): the critical values ``c_1..c_K`` with
  ``P0(Z_1 < c_1, ..., Z_{k-1} < c_{k-1}, Z_k >= c_k) = alpha(t_k) - alpha(t_{k-1})`` under the
  canonical joint distribution (Z_k normal, ``Cov(Z_j, Z_k) = sqrt(t_j / t_k)`` for j <= k,
  independent increments of the score ``Z_k sqrt(t_k)``), computed by numerical integration: the
  Armitage-McPherson-Rowe recursion on Jennison & Turnbull's grid (2000, chapter 19: Simpson's rule
  on 6r-1 points plus midpoints; they report ~1e-6 accuracy at r = 16, we use r = 32), solving one
  root per look. Any K works (20 looks take ~0.3 s; results are cached).
  The boundaries of look k depend only on ``t_1..t_k``, so the observed fractions can be passed if
  the seeds differ from the plan (then give the last look t = 1 to spend all of alpha).
* **p to z**: ``z = Phi^{-1}(1 - p)`` of the one-sided p (:func:`z_from_p`), so any one-sided test
  plugs in: Welch's t, Mann-Whitney U, Wilcoxon signed-rank. For t-tests this "p-value matching"
  is the usual treatment of an unknown variance in group-sequential designs (Jennison & Turnbull's
  group-sequential t-tests); the simulations in tests/test_sequential.py check that it keeps the
  error rates from 10 seeds per variant on. For rank tests it assumes that the sequence of standardised rank statistics has
  the canonical joint distribution of normal scores, which holds asymptotically (the Mann-Whitney /
  Wilcoxon statistics computed on accumulating data are asymptotically Brownian in information
  time); with few seeds, ties and exact (discrete) p-values it is an approximation. z is capped at
  +-:data:`Z_CAP` (p = 0 or 1); a missing p (no test, too few seeds) is NaN: "continue".
* **Stopping rules** (:func:`decide`): at look k, ``supported`` if ``z >= c_k``, ``contradicted`` if
  ``z_opposite >= c_k`` (``z_opposite`` defaults to ``-z``; for discrete tests with ties
  ``p + p_opposite >= 1`` so both cannot cross at once); otherwise ``continue``, and at the last
  look ``inconclusive``. Optional non-binding futility (off by default): at an interim look, stop
  ``inconclusive`` when neither direction reaches ``futility`` (``max(z, z_opposite) < futility``,
  e.g. 0.5: the data point to no difference either way). The boundaries are computed without it
  and a futility stop only removes paths that might later have crossed, so both error rates stay
  <= alpha whether or not it is applied (it costs power, and saves seeds under no effect).
* **Trace** (:class:`BoundaryTrace`, built by :func:`trace_claim`): per claim the looks, seeds per
  variant, fractions, boundaries, observed z per look reached and the decisions, as a JSON-ready
  dict for the report's plot (``upper`` = c_k on the claimed-direction z scale, ``lower`` = -c_k:
  ``contradicted`` is, for a continuous test, z <= -c_k).

:func:`exit_probabilities` gives the exact probabilities of stopping at each look for a drift
(``E Z_k = drift * sqrt(t_k)``; two-sample: ``drift = (shift / sd) * sqrt(max / 2)``), e.g. for
the expected number of seeds of a design (:func:`expected_seeds`).

This module imports no torch (numpy and scipy only), like :mod:`reglab.stats`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
from scipy import optimize, special
from scipy import stats as st

#: fewest seeds per variant of a look (as :data:`reglab.stats.MIN_N`: fewer gives no test)
MIN_START = 3
#: |z| cap of :func:`z_from_p` (p = 0 or 1); larger than any boundary reached in practice
Z_CAP = 40.0
#: Jennison & Turnbull grid size parameter: 6r - 1 points (plus midpoints) per look
GRID_R = 32
SCHEDULE_KEYS = ("start", "step", "max")
DECISIONS = ("supported", "contradicted", "inconclusive", "continue")


# --------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class Schedule:
    """A seed schedule: look 1 at ``start`` seeds per variant, then ``step`` more per look, up to ``max``."""

    start: int
    step: int
    max: int

    def __post_init__(self):
        for key in SCHEDULE_KEYS:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"seed schedule: {key!r} must be an integer, not {v!r}")
        if self.start < MIN_START:
            raise ValueError(f"seed schedule: 'start' must be >= {MIN_START} (a test needs {MIN_START} seeds "
                             f"per variant), not {self.start}")
        if self.step < 1:
            raise ValueError(f"seed schedule: 'step' must be >= 1, not {self.step}")
        if self.max < self.start:
            raise ValueError(f"seed schedule: 'max' ({self.max}) must be >= 'start' ({self.start})")

    @classmethod
    def from_config(cls, entry: Mapping) -> Schedule:
        """The schedule of a config mapping ``{start, step, max}``; ValueError naming a bad, missing or unknown key."""
        if not isinstance(entry, Mapping):
            raise ValueError(f"seed schedule must be a mapping with keys {SCHEDULE_KEYS}, not {entry!r}")
        unknown = sorted(set(map(str, entry)) - set(SCHEDULE_KEYS))
        if unknown:
            raise ValueError(f"seed schedule: unknown key {unknown[0]!r}; expected {SCHEDULE_KEYS}")
        missing = [k for k in SCHEDULE_KEYS if k not in entry]
        if missing:
            raise ValueError(f"seed schedule: missing key {missing[0]!r}")
        return cls(entry["start"], entry["step"], entry["max"])

    @property
    def n_looks(self) -> int:
        """K = 1 + ceil((max - start) / step)."""
        return 1 + -(-(self.max - self.start) // self.step)

    @property
    def looks(self) -> tuple[int, ...]:
        """Seeds per variant at each look: start, start + step, ..., max."""
        return tuple(min(self.start + k * self.step, self.max) for k in range(self.n_looks))

    @property
    def fractions(self) -> tuple[float, ...]:
        """Information fraction of each look, n_k / max (the last is 1)."""
        return tuple(n / self.max for n in self.looks)

    def look_of(self, n: int) -> int | None:
        """The 1-based look at which ``n`` seeds per variant are reached exactly, None if none is."""
        looks = self.looks
        return looks.index(n) + 1 if n in looks else None


def _fractions(t) -> tuple[float, ...]:
    """``t`` (a Schedule or a sequence of information fractions) as a validated tuple of floats."""
    if isinstance(t, Schedule):
        return t.fractions
    t = tuple(float(x) for x in np.atleast_1d(np.asarray(t, dtype=float)))
    if not t:
        raise ValueError("information fractions: need at least one look")
    if not all(0 < x <= 1 for x in t):
        raise ValueError(f"information fractions must lie in (0, 1], not {t}")
    if any(b <= a for a, b in zip(t, t[1:])):
        raise ValueError(f"information fractions must increase strictly, not {t}")
    return t


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), not {alpha}")
    return alpha


# --------------------------------------------------------------------------- spending and boundaries
def lan_demets_obf(t, alpha: float, sides: int = 1) -> np.ndarray:
    """Cumulative type-I error spent at information fractions ``t``: Lan-DeMets O'Brien-Fleming type.

    ``sides=1`` (what :func:`boundaries` uses): ``alpha`` is the one-sided level and
    ``alpha(t) = 2 (1 - Phi(z_{1-alpha/2} / sqrt(t)))`` (gsDesign ``sfLDOF``). ``sides=2``: ``alpha``
    is the two-sided level of a symmetric test, Lan & DeMets (1983): ``alpha(t) = 2 - 2 Phi(z_{1-alpha/2}
    / sqrt(t))`` in total, half of it in each tail. Both spend exactly ``alpha`` (in total) at t = 1.
    """
    if sides not in (1, 2):
        raise ValueError(f"sides must be 1 or 2, not {sides!r}")
    alpha = float(alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    t = np.asarray(t, dtype=float)
    if np.any(t < 0) or np.any(t > 1):
        raise ValueError("information fractions must lie in [0, 1]")
    z = st.norm.isf(alpha / 2)
    with np.errstate(divide="ignore"):
        per_tail = st.norm.sf(z / np.sqrt(t))  # 0 at t = 0
    # one-sided: both "halves" go to the one tail; two-sided: one half per tail
    return 2 * per_tail


def _grid(mean: float, hi: float, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Jennison & Turnbull's quadrature grid for a N(mean, 1) variable on (-inf, hi): points, Simpson weights."""
    i = np.arange(1, 6 * r, dtype=float)
    x = np.where(i < r, -3 - 4 * np.log(r / i),
                 np.where(i <= 5 * r, -3 + 3 * (i - r) / (2 * r), 3 + 4 * np.log(r / np.maximum(6 * r - i, 1e-300))))
    x = x + mean
    if hi < x[-1]:
        x = np.append(x[x < hi], hi)
    if x.size == 1:  # boundary below the whole grid: nothing continues
        return x, np.zeros(1)
    h = np.diff(x)
    pts = np.empty(2 * x.size - 1)
    pts[0::2], pts[1::2] = x, x[:-1] + h / 2
    w = np.zeros(pts.size)
    w[0:-1:2] += h / 6
    w[2::2] += h / 6
    w[1::2] = 4 * h / 6
    return pts, w


def _first_look_density(mean: float, hi: float, r: int):
    z, w = _grid(mean, hi, r)
    return z, w * st.norm.pdf(z - mean)


def _next_density(z, wf, info_prev, info, drift, hi, r):
    """Sub-density (times weights) of Z_k on (-inf, hi) given the weighted sub-density of Z_{k-1}."""
    d = info - info_prev
    mean = drift * math.sqrt(info)
    zn, wn = _grid(mean, hi, r)
    # Z_k sqrt(I_k) = Z_{k-1} sqrt(I_{k-1}) + N(drift d, d)
    u = (zn[:, None] * math.sqrt(info) - z[None, :] * math.sqrt(info_prev) - drift * d) / math.sqrt(d)
    dens = st.norm.pdf(u) @ wf * math.sqrt(info / d)
    return zn, wn * dens


def _cross_prob(z, wf, info_prev, info, drift, c) -> float:
    """P(continued to look k-1 and Z_k >= c), from the weighted sub-density of Z_{k-1}."""
    d = info - info_prev
    u = (c * math.sqrt(info) - z * math.sqrt(info_prev) - drift * d) / math.sqrt(d)
    return float(special.ndtr(-u) @ wf)


@lru_cache(maxsize=256)
def _boundaries(t: tuple[float, ...], alpha: float, r: int) -> tuple[float, ...]:
    spent = lan_demets_obf(np.array(t), alpha)
    inc = np.diff(np.concatenate([[0.0], spent]))
    c = [float(st.norm.isf(inc[0])) if inc[0] > 0 else math.inf]
    z, wf = _first_look_density(0.0, c[0], r)
    for k in range(1, len(t)):
        target = inc[k]
        if not target > 1e-300:
            ck = math.inf
        else:
            f = lambda x: math.log(_cross_prob(z, wf, t[k - 1], t[k], 0.0, x) + 1e-320) - math.log(target)  # noqa: E731
            lo, hi = 0.0, 8.0
            while f(lo) < 0:
                lo -= 4.0
            while f(hi) > 0:
                hi += 8.0
            ck = float(optimize.brentq(f, lo, hi, xtol=1e-10, rtol=1e-12))
        c.append(ck)
        if k < len(t) - 1:
            z, wf = _next_density(z, wf, t[k - 1], t[k], 0.0, ck, r)
    return tuple(c)


def boundaries(t, alpha: float) -> np.ndarray:
    """One-sided group-sequential critical values ``c_1..c_K`` (z scale) at fractions ``t`` (or a
    :class:`Schedule`), spending :func:`lan_demets_obf` ``(t, alpha)``: reject at the first look
    with ``Z_k >= c_k``. ``inf`` where a look spends nothing representable (< 1e-300)."""
    return np.array(_boundaries(_fractions(t), _check_alpha(alpha), GRID_R))


def exit_probabilities(t, upper, lower=None, drift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of stopping at each look across ``upper`` (``Z_k >= upper_k``) and, if given,
    across ``lower`` (``Z_k <= lower_k``), for the canonical process with ``E Z_k = drift sqrt(t_k)``.

    Returns ``(p_upper, p_lower)`` (``p_lower`` all 0 without ``lower``); ``1 - sum of both`` is the
    probability of reaching the end undecided. With ``lower = -upper`` this is the two-family design
    of :func:`decide` for a continuous test (``z_opposite = -z``).
    """
    t = _fractions(t)
    upper = np.broadcast_to(np.asarray(upper, dtype=float), (len(t),))
    lower = np.full(len(t), -np.inf) if lower is None else np.broadcast_to(np.asarray(lower, dtype=float), (len(t),))
    if np.any(lower >= upper):
        raise ValueError("lower boundaries must lie below the upper ones")
    p_up, p_lo = np.zeros(len(t)), np.zeros(len(t))
    r, drift = GRID_R, float(drift)
    m1 = drift * math.sqrt(t[0])
    p_up[0] = st.norm.sf(upper[0] - m1)
    p_lo[0] = st.norm.cdf(lower[0] - m1)
    z, w = _grid(m1, upper[0], r)
    wf = w * st.norm.pdf(z - m1) * (z > lower[0])
    for k in range(1, len(t)):
        p_up[k] = _cross_prob(z, wf, t[k - 1], t[k], drift, upper[k])
        p_lo[k] = _cross_prob(z, wf, t[k - 1], t[k], drift, -np.inf) - _cross_prob(z, wf, t[k - 1], t[k], drift,
                                                                                    lower[k])
        if k < len(t) - 1:
            z, wf = _next_density(z, wf, t[k - 1], t[k], drift, upper[k], r)
            wf = wf * (z > lower[k])
    return p_up, p_lo


def expected_seeds(schedule: Schedule, alpha: float, drift: float = 0.0) -> float:
    """Expected seeds per variant of the two-family design (continuous test, no futility) when
    ``E Z_k = drift sqrt(t_k)``: sum of n_k P(stop at look k), plus max P(reach the end)."""
    c = boundaries(schedule, alpha)
    up, lo = exit_probabilities(schedule, c, -c, drift)
    n = np.array(schedule.looks, dtype=float)
    stop = up + lo
    stop[-1] = 1 - stop[:-1].sum()
    return float(n @ stop)


# --------------------------------------------------------------------------- decisions
def z_from_p(p):
    """z = Phi^{-1}(1 - p) of a one-sided p-value (a float, or an array elementwise), capped at
    +-Z_CAP; NaN for a missing (NaN/None) p."""
    if p is None:
        return math.nan
    arr = np.asarray(p, dtype=float)
    if np.any(arr < 0) or np.any(arr > 1):
        raise ValueError(f"a p-value must lie in [0, 1], not {p}")
    z = np.clip(-special.ndtri(arr), -Z_CAP, Z_CAP)  # -Phi^{-1}(p): exact in both tails
    return float(z) if z.ndim == 0 else z


def decide(z, look: int, t, alpha: float, *, z_opposite=None, futility: float | None = None):
    """Decision at ``look`` (1-based, of ``len(t)``) from the claimed-direction z (and the
    opposite-direction z, default ``-z``): ``supported`` / ``contradicted`` / ``continue``, at the
    last look ``inconclusive`` instead of ``continue``. ``t``: the fractions or a :class:`Schedule`.
    ``futility``: optional non-binding rule, stop ``inconclusive`` at an interim look when
    ``max(z, z_opposite) < futility``. A NaN z (no test) continues (at the last look: inconclusive).

    ``z`` (and ``z_opposite``) may be arrays (many claims or simulated experiments at the same
    look): then an array of decisions of the same shape is returned.
    """
    t = _fractions(t)
    if isinstance(look, bool) or not isinstance(look, numbers.Integral) or not 1 <= look <= len(t):
        raise ValueError(f"look must be an integer in 1..{len(t)}, not {look!r}")
    c = _boundaries(t[:look], _check_alpha(alpha), GRID_R)[-1]
    zz = np.asarray(np.nan if z is None else z, dtype=float)
    zo = -zz if z_opposite is None else np.asarray(z_opposite, dtype=float)
    zz, zo = np.broadcast_arrays(zz, zo)
    up, down = zz >= c, zo >= c
    if np.any(up & down):
        raise ValueError(f"z and z_opposite cannot both cross the boundary {c:.3f}: "
                         "the two one-sided p-values of a test sum to >= 1")
    out = np.full(zz.shape, "inconclusive" if look == len(t) else "continue", dtype=object)
    if futility is not None and look < len(t):
        out[np.maximum(zz, zo) < float(futility)] = "inconclusive"  # NaN compares False: continue
    out[up] = "supported"
    out[down] = "contradicted"
    return str(out[()]) if out.ndim == 0 else out


# --------------------------------------------------------------------------- trace
def _json_float(x) -> float | None:
    """A finite float, or None (NaN: not observed; inf: no boundary at that look)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


@dataclass
class BoundaryTrace:
    """One claim's sequential test, for the report's plot; ``to_dict`` is JSON-ready.

    Lists have one entry per look of the schedule (K); ``z``, ``z_opposite`` and ``decisions`` are
    None for looks not reached (after the stop, or not run yet). ``upper`` = c_k (``supported`` when
    z >= it), ``lower`` = -c_k (``contradicted`` when z_opposite >= c_k, i.e. z <= -c_k for a
    continuous test); None where a look has no boundary. ``decision``: the latest decision
    (``continue`` while undecided and looks remain); ``stopped_at``: the 1-based look that decided it.
    """

    claim_id: str | None
    alpha: float
    schedule: dict
    looks: list[int]
    fractions: list[float]
    upper: list[float | None]
    lower: list[float | None]
    z: list[float | None] = field(default_factory=list)
    z_opposite: list[float | None] = field(default_factory=list)
    decisions: list[str | None] = field(default_factory=list)
    decision: str = "continue"
    stopped_at: int | None = None
    futility: float | None = None
    spending: str = "lan-demets-obf"

    def to_dict(self) -> dict:
        """Plain dict of lists, floats (non-finite -> None), ints and strings."""
        d = asdict(self)
        for key in ("fractions", "upper", "lower", "z", "z_opposite"):
            d[key] = [_json_float(v) for v in d[key]]
        d["alpha"] = float(d["alpha"])
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> BoundaryTrace:
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()})

    @property
    def n_seeds(self) -> int | None:
        """Seeds per variant used so far (at the last look reached), None before look 1."""
        reached = [n for n, d in zip(self.looks, self.decisions) if d is not None]
        return reached[-1] if reached else None


def trace_claim(p_values: Sequence, schedule: Schedule | Mapping, alpha: float, *,
                p_values_opposite: Sequence | None = None, claim_id: str | None = None,
                futility: float | None = None) -> BoundaryTrace:
    """Run :func:`decide` over the looks observed so far and record them in a :class:`BoundaryTrace`.

    ``p_values[k]``: the claimed-direction one-sided p at look k+1 (``p_value`` of
    :func:`reglab.stats.check_claim` on the first n_{k+1} seeds; NaN/None when untested);
    ``p_values_opposite`` likewise (``p_value_opposite``; default: z_opposite = -z). Observed looks
    after the stopping look are ignored (the decision stands). More p-values than looks is an error.
    """
    if not isinstance(schedule, Schedule):
        schedule = Schedule.from_config(schedule)
    t, looks = schedule.fractions, schedule.looks
    k_max = len(t)
    p_values = list(p_values)
    if len(p_values) > k_max:
        raise ValueError(f"{len(p_values)} looks of p-values for a schedule of {k_max} looks")
    if p_values_opposite is not None:
        p_values_opposite = list(p_values_opposite)
        if len(p_values_opposite) != len(p_values):
            raise ValueError("p_values and p_values_opposite must have one entry per look each")
    c = boundaries(t, alpha)
    tr = BoundaryTrace(claim_id=claim_id, alpha=float(alpha), schedule=asdict(schedule), looks=list(looks),
                       fractions=list(t), upper=[float(x) for x in c], lower=[float(-x) for x in c],
                       z=[None] * k_max, z_opposite=[None] * k_max, decisions=[None] * k_max,
                       futility=None if futility is None else float(futility))
    for k, p in enumerate(p_values):
        z = z_from_p(p)
        zo = -z if p_values_opposite is None else z_from_p(p_values_opposite[k])
        d = decide(z, k + 1, t, alpha, z_opposite=zo, futility=futility)
        tr.z[k], tr.z_opposite[k], tr.decisions[k], tr.decision = z, zo, d, d
        if d != "continue":
            tr.stopped_at = k + 1
            break
    return tr
