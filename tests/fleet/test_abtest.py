"""A/B test of two model versions on a rate (fleet/abtest.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fleet.abtest import ABResult, ab_test
from fleet.errors import FleetConfigError


def test_hand_computed_case() -> None:
    # A 100/1000 = 10%, B 130/1000 = 13%; pooled 11.5%: se = sqrt(.115 * .885 * 2/1000) = 0.0142671
    res = ab_test(100, 1000, 130, 1000)
    assert res.rate_a == 0.1 and res.rate_b == 0.13
    assert res.z == pytest.approx(0.03 / math.sqrt(0.115 * 0.885 * 0.002), rel=1e-12)
    assert res.z == pytest.approx(2.1027, abs=1e-4)
    assert res.p_value == pytest.approx(0.03549, abs=1e-4)
    se = math.sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 1000)
    assert res.difference_ci == pytest.approx((0.03 - 1.959964 * se, 0.03 + 1.959964 * se), rel=1e-6)
    assert res.lift == pytest.approx(0.3)
    assert res.lift_ci is not None and res.lift_ci[0] < 0.3 < res.lift_ci[1]
    assert res.significant and res.winner == "b"


def test_z_squared_is_scipy_chi_square_of_the_table() -> None:
    rng = np.random.default_rng(40)
    for _ in range(20):
        n_a, n_b = (int(x) for x in rng.integers(50, 5000, 2))
        x_a, x_b = int(rng.integers(1, n_a)), int(rng.integers(1, n_b))
        res = ab_test(x_a, n_a, x_b, n_b)
        chi2 = stats.chi2_contingency(np.array([[x_a, n_a - x_a], [x_b, n_b - x_b]]), correction=False)
        assert res.z**2 == pytest.approx(chi2.statistic, rel=1e-9)
        assert res.p_value == pytest.approx(chi2.pvalue, rel=1e-6)


def test_lift_interval_covers_the_truth_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(41)
    covered = 0
    runs = 400
    for _ in range(runs):
        a, b = int(rng.binomial(2000, 0.05)), int(rng.binomial(2000, 0.06))
        ci = ab_test(a, 2000, b, 2000).lift_ci
        assert ci is not None
        covered += ci[0] <= 0.2 <= ci[1]
    assert 0.92 <= covered / runs <= 0.98


def test_one_sided_and_no_difference() -> None:
    greater = ab_test(100, 1000, 130, 1000, alternative="greater")
    assert greater.p_value == pytest.approx(ab_test(100, 1000, 130, 1000).p_value / 2)
    assert ab_test(100, 1000, 130, 1000, alternative="less").p_value > 0.9
    same = ab_test(0, 100, 0, 100)
    assert same.p_value == 1.0 and not same.significant and same.winner is None and same.lift is None


def test_invalid_counts_are_refused() -> None:
    with pytest.raises(FleetConfigError):
        ab_test(5, 0, 1, 10)
    with pytest.raises(FleetConfigError):
        ab_test(11, 10, 1, 10)
    with pytest.raises(FleetConfigError):
        ab_test(1, 10, 1, 10, confidence=1.5)


def test_result_is_json() -> None:
    res = ab_test(10, 100, 20, 100)
    assert ABResult.model_validate_json(res.model_dump_json()) == res
