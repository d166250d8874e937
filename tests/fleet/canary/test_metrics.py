"""One judge per metric (fleet/canary/metrics.py), seen through the analysis."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fleet.canary import (
    CanaryMetric,
    DeviceMetrics,
    Verdict,
    analyse_canary,
)
from tests.fleet.canary.device_groups import device_group, metric_result, simulated_device


def test_clearly_slower_canary_fails_on_latency() -> None:
    rng = np.random.default_rng(21)
    report = analyse_canary(device_group(rng, "c", 12, latency_ms=60.0), device_group(rng, "b", 30))
    assert report.verdict == Verdict.FAIL
    latency = metric_result(report, CanaryMetric.LATENCY)
    assert latency.verdict == Verdict.FAIL and latency.critical
    assert latency.relative_change == pytest.approx(0.5, abs=0.1)
    assert latency.effect_size == pytest.approx(1.0)  # every canary device slower than every baseline one
    assert any(r.startswith("latency (critical) fail") for r in report.reasons)


def test_latency_statistic_is_scipy_mann_whitney_on_device_values() -> None:
    rng = np.random.default_rng(22)
    canary, baseline = device_group(rng, "c", 8, latency_ms=44.0), device_group(rng, "b", 15)
    latency = metric_result(analyse_canary(canary, baseline), CanaryMetric.LATENCY)

    def mean(d: DeviceMetrics) -> float:
        assert d.latency_ms is not None
        return d.latency_ms.total / sum(d.latency_ms.counts)

    expected = stats.mannwhitneyu([mean(d) for d in canary], [mean(d) for d in baseline], alternative="greater")
    assert latency.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert latency.effect_size == pytest.approx(2 * expected.statistic / (8 * 15) - 1)
    assert latency.n_canary == 8 and latency.n_baseline == 15


def test_too_few_devices_is_inconclusive_not_pass() -> None:
    rng = np.random.default_rng(24)
    report = analyse_canary(device_group(rng, "c", 2), device_group(rng, "b", 30))
    assert report.verdict == Verdict.INCONCLUSIVE
    latency = metric_result(report, CanaryMetric.LATENCY)
    assert latency.verdict == Verdict.INCONCLUSIVE and "needs 5 devices" in latency.reason
    assert any("latency (critical) inconclusive" in r for r in report.reasons)


def test_too_few_requests_is_inconclusive() -> None:
    rng = np.random.default_rng(25)
    report = analyse_canary(device_group(rng, "c", 6, requests=30), device_group(rng, "b", 10, requests=30))
    assert report.verdict == Verdict.INCONCLUSIVE
    assert "needs 500 requests" in metric_result(report, CanaryMetric.ERROR_RATE).reason


def test_low_traffic_devices_give_no_device_value() -> None:
    rng = np.random.default_rng(36)
    report = analyse_canary(device_group(rng, "c", 6, requests=10), device_group(rng, "b", 10))
    latency = metric_result(report, CanaryMetric.LATENCY)
    assert latency.verdict == Verdict.INCONCLUSIVE
    assert "no canary device has latency data from >= 20 requests" in latency.reason
    assert latency.details["low_traffic_canary"] == 6


def test_all_zero_baseline_is_inconclusive_with_reason() -> None:
    rng = np.random.default_rng(26)
    report = analyse_canary(device_group(rng, "c", 10), device_group(rng, "b", 20, latency_ms=0.0))
    assert report.verdict == Verdict.INCONCLUSIVE
    latency = metric_result(report, CanaryMetric.LATENCY)
    assert latency.verdict == Verdict.INCONCLUSIVE
    assert "zero on every device" in latency.reason


def test_higher_error_rate_fails_and_zero_errors_pass_explicitly() -> None:
    rng = np.random.default_rng(29)
    report = analyse_canary(device_group(rng, "c", 10, error_rate=0.03), device_group(rng, "b", 20))
    errors = metric_result(report, CanaryMetric.ERROR_RATE)
    assert errors.verdict == Verdict.FAIL and report.verdict == Verdict.FAIL
    clean = analyse_canary(device_group(rng, "c", 10, error_rate=0.0), device_group(rng, "b", 20, error_rate=0.0))
    zero = metric_result(clean, CanaryMetric.ERROR_RATE)
    assert zero.verdict == Verdict.PASS and "no errors in either group" in zero.reason


def test_error_rate_variance_grows_with_device_overdispersion() -> None:
    rng = np.random.default_rng(30)
    baseline = device_group(rng, "b", 20, error_rate=0.01)
    even = [simulated_device(rng, f"c-{i}", error_rate=0.0) for i in range(10)]
    even = [d.model_copy(update={"errors": 6}) for d in even]  # 1.5% everywhere
    lumpy = [d.model_copy(update={"errors": 60 if i == 0 else 0}) for i, d in enumerate(even)]  # same total
    p_even = metric_result(analyse_canary(even, baseline), CanaryMetric.ERROR_RATE)
    p_lumpy = metric_result(analyse_canary(lumpy, baseline), CanaryMetric.ERROR_RATE)
    phi_even, phi_lumpy = p_even.details["overdispersion"], p_lumpy.details["overdispersion"]
    assert isinstance(phi_even, float) and isinstance(phi_lumpy, float) and phi_even < phi_lumpy
    assert p_lumpy.p_value is not None and p_even.p_value is not None and p_lumpy.p_value > p_even.p_value
