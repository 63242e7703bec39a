"""The few statistics the judge needs, in plain Python: Student's t distribution and pooled variances.

No scipy: the lab runs where torch runs, and these are a screen of code. Checked against known
quantiles in tests/test_judge.py.
"""
from __future__ import annotations

import functools
import math
from statistics import NormalDist


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom (df = inf: the normal distribution)."""
    if math.isinf(df):
        return NormalDist().cdf(t)
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, by bisection on t_cdf (exact to ~1e-10)."""
    assert 0.0 < p < 1.0 and df > 0
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-10:
            break
    return 0.5 * (lo + hi)


def pooled_variance(groups) -> tuple[float | None, int]:
    """(variance, degrees of freedom) pooled over groups of values that share one true mean each
    (the runs of one commit, say): sum of squared deviations from each group's mean over the total
    of (size - 1). Groups of one value carry no information about the spread; (None, 0) without any."""
    squares, df = 0.0, 0
    for values in groups:
        values = list(values)
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        squares += sum((v - mean) ** 2 for v in values)
        df += len(values) - 1
    return (squares / df, df) if df else (None, 0)


def mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def median(values) -> float | None:
    values = sorted(values)
    return values[len(values) // 2] if values else None


@functools.lru_cache(maxsize=None)
def sequential_boundary(alpha: float, looks: int) -> float:
    """The constant c of a one-sided sequential test with up to `looks` looks at a standardized mean
    (z after n of `looks` unit-variance observations): keep when z >= c, stop when z <= c * n / looks
    (futility, binding), so that a mean of zero is kept with probability alpha in all. Computed by
    propagating the density of the running sum on a grid (the classic recursive integration of group
    sequential designs), then bisection on c."""
    import numpy as np
    if looks == 1:
        return NormalDist().inv_cdf(1.0 - alpha)
    h = 0.01
    grid = np.arange(0.0, 5.0 * math.sqrt(looks), h)  # the running sum, where it can go on (above 0)
    kernel = np.exp(-(grid[:, None] - grid[None, :]) ** 2 / 2) / math.sqrt(2 * math.pi) * h

    def tail(x):  # P(N(0, 1) > x), elementwise
        return np.array([0.5 * math.erfc(v / math.sqrt(2)) for v in np.atleast_1d(x)])

    def false_keeps(c):
        density, total = np.exp(-grid ** 2 / 2) / math.sqrt(2 * math.pi), 0.0
        for n in range(1, looks + 1):
            low, high = c * n / looks * math.sqrt(n), c * math.sqrt(n)
            if n == 1:
                total += float(tail(high)[0])
            else:
                total += float(np.sum(density * tail(high - grid)) * h)
                density = kernel @ density
            density = np.where((grid > low) & (grid < high), density, 0.0)
        return total

    lo, hi = 0.5, 5.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if false_keeps(mid) < alpha else (mid, hi)
    return 0.5 * (lo + hi)
