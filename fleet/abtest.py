"""A/B analysis of two model versions on an outcome rate (conversions, accepted answers, successes).

`ab_test` runs the pooled two-proportion z-test of B against A and reports the difference with a Wald
confidence interval (unpooled standard error) and the relative lift ``p_B / p_A - 1`` with a confidence
interval from the delta method on ``log(p_B / p_A)`` (Katz). Invalid counts raise
`fleet.errors.FleetConfigError`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from fleet._stats import two_proportion_z
from fleet.errors import FleetConfigError

__all__ = ["ABResult", "ab_test"]


class ABResult(BaseModel):
    """Result of an A/B test on a rate; JSON-ready."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    successes_a: int
    trials_a: int
    successes_b: int
    trials_b: int
    rate_a: float
    rate_b: float
    difference: float
    """``rate_b - rate_a``."""
    difference_ci: tuple[float, float]
    lift: float | None
    """``rate_b / rate_a - 1``; None when A has no successes."""
    lift_ci: tuple[float, float] | None
    z: float
    p_value: float
    alternative: Literal["two-sided", "greater", "less"]
    confidence: Annotated[float, Field(gt=0, lt=1)]
    significant: bool
    winner: Literal["a", "b"] | None
    """The better version when the difference is significant (higher rate is better)."""


def ab_test(
    successes_a: int,
    trials_a: int,
    successes_b: int,
    trials_b: int,
    *,
    confidence: float = 0.95,
    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
) -> ABResult:
    """Two-proportion z-test of version B's rate against version A's, with CI and lift.

    ``alternative='greater'`` asks whether B's rate is higher. The z statistic uses the pooled standard
    error (its square equals the uncorrected chi-square of the 2x2 table); the intervals use unpooled ones.
    """
    if not 0 < confidence < 1:
        raise FleetConfigError("confidence must lie strictly between 0 and 1")
    test = two_proportion_z(successes_a, trials_a, successes_b, trials_b, alternative=alternative)
    zc = float(stats.norm.ppf(0.5 + confidence / 2))
    diff = test.diff
    diff_ci = (diff - zc * test.se_unpooled, diff + zc * test.se_unpooled)
    lift: float | None = None
    lift_ci: tuple[float, float] | None = None
    if successes_a > 0:
        lift = test.p_b / test.p_a - 1
        if successes_b > 0:
            se_log = math.sqrt(1 / successes_a - 1 / trials_a + 1 / successes_b - 1 / trials_b)  # Katz log risk ratio
            log_rr = math.log(test.p_b / test.p_a)
            lift_ci = (math.exp(log_rr - zc * se_log) - 1, math.exp(log_rr + zc * se_log) - 1)
    alpha = 1 - confidence
    significant = test.p_value < alpha
    winner: Literal["a", "b"] | None = None
    if significant and diff != 0:
        winner = "b" if diff > 0 else "a"
    return ABResult(
        successes_a=successes_a,
        trials_a=trials_a,
        successes_b=successes_b,
        trials_b=trials_b,
        rate_a=test.p_a,
        rate_b=test.p_b,
        difference=diff,
        difference_ci=diff_ci,
        lift=lift,
        lift_ci=lift_ci,
        z=test.z,
        p_value=test.p_value,
        alternative=alternative,
        confidence=confidence,
        significant=significant,
        winner=winner,
    )
