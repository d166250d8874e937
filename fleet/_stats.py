"""Small statistical helpers shared by drift, canary and A/B analysis (scipy for distributions only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from fleet.errors import FleetConfigError

Alternative = Literal["two-sided", "greater", "less"]


def benjamini_hochberg(pvalues: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (q-values), in input order; ``None`` entries are skipped and
    stay ``None`` (they do not count towards the number of tests)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    out: list[float | None] = [None] * len(pvalues)
    m = len(idx)
    if m == 0:
        return out
    p = np.array([pvalues[i] for i in idx], dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise FleetConfigError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    # step-up: q_(i) = min_{j >= i} p_(j) * m / j, capped at 1
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    for j, i in enumerate(idx):
        out[i] = float(q[j])
    return out


@dataclass(frozen=True, slots=True)
class ProportionTest:
    """Two-proportion z-test of group b against group a."""

    p_a: float
    p_b: float
    diff: float
    z: float
    p_value: float
    se_pooled: float
    se_unpooled: float


def two_proportion_z(
    x_a: int,
    n_a: int,
    x_b: int,
    n_b: int,
    *,
    alternative: Alternative = "two-sided",
    variance_inflation: float = 1.0,
) -> ProportionTest:
    """Pooled two-proportion z-test of ``x_b/n_b`` against ``x_a/n_a``. ``alternative='greater'`` tests
    p_b > p_a. ``variance_inflation`` (>= 1) widens the standard error for clustered data (design effect).
    When both groups have the same all-0 or all-1 outcome the test is undefined: z = 0, p = 1."""
    if n_a <= 0 or n_b <= 0:
        raise FleetConfigError("both groups need at least one trial")
    if not (0 <= x_a <= n_a and 0 <= x_b <= n_b):
        raise FleetConfigError("successes must lie between 0 and the number of trials")
    p_a, p_b = x_a / n_a, x_b / n_b
    pooled = (x_a + x_b) / (n_a + n_b)
    inflation = max(1.0, variance_inflation)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b) * inflation)
    se_unpooled = math.sqrt((p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b) * inflation)
    diff = p_b - p_a
    if se_pooled == 0:
        return ProportionTest(p_a, p_b, diff, 0.0, 1.0, 0.0, se_unpooled)
    z = diff / se_pooled
    p_value = _p_from_z(z, alternative)
    return ProportionTest(p_a, p_b, diff, z, p_value, se_pooled, se_unpooled)


def _p_from_z(z: float, alternative: Alternative) -> float:
    if alternative == "two-sided":
        return float(2 * stats.norm.sf(abs(z)))
    if alternative == "greater":
        return float(stats.norm.sf(z))
    return float(stats.norm.cdf(z))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when ``n == 0``."""
    if n <= 0:
        return (0.0, 1.0)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def cliffs_delta_from_u(u_first: float, n_first: int, n_second: int) -> float:
    """Cliff's delta P(X > Y) - P(X < Y) from the Mann-Whitney U of the first sample (ties count half),
    equal to the rank-biserial correlation ``2U / (n1 n2) - 1``."""
    return 2.0 * u_first / (n_first * n_second) - 1.0
