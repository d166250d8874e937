"""Canary analysis (fleet/canary.py): fail on a slower canary, pass on an equal one, inconclusive on thin or
broken data, with the device as the sampling unit and device classes compared with their own kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from fleet.canary import (
    CanaryConfig,
    CanaryMetric,
    CanaryReport,
    DeviceMetrics,
    MetricResult,
    MetricSpec,
    Verdict,
    analyse_canary,
    device_metrics,
)
from fleet.wire.messages import ShadowStats, TelemetryBatch
from fleet.wire.sketches import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS_MS,
    HistogramAccumulator,
    serialize_sketch,
    sketch_from_values,
)


def _device(
    rng: np.random.Generator,
    name: str,
    *,
    device_class: str = "rpi4-arm64",
    latency_ms: float = 40.0,
    confidence: float = 0.85,
    error_rate: float = 0.002,
    requests: int = 400,
    dog: float = 0.3,
    shift: float = 0.0,
    agreement: float = 0.97,
    window: tuple[float, float] = (0.0, 600.0),
) -> DeviceMetrics:
    lat = HistogramAccumulator(LATENCY_BUCKETS_MS)
    lat.observe_many(rng.lognormal(np.log(latency_ms), 0.25, requests) if latency_ms > 0 else np.zeros(requests))
    conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    conf.observe_many(np.clip(rng.normal(confidence, 0.05, requests), 0, 1))
    dogs = int(rng.binomial(requests, dog))
    compared = 50
    return DeviceMetrics(
        device_id=name,
        device_class=device_class,
        requests=requests,
        errors=int(rng.binomial(requests, error_rate)),
        latency_ms=lat.to_histogram(),
        confidence=conf.to_histogram(),
        predictions={"cat": requests - dogs, "dog": dogs},
        shadow_compared=compared,
        shadow_agreed=int(rng.binomial(compared, agreement)),
        feature_sketches={"x": serialize_sketch(sketch_from_values(rng.normal(shift, 1, requests)))},
        window_start=window[0],
        window_end=window[1],
    )


def _group(rng: np.random.Generator, prefix: str, n: int, **kw: Any) -> list[DeviceMetrics]:
    return [_device(rng, f"{prefix}-{i}", **kw) for i in range(n)]


def _metric(report: CanaryReport, metric: CanaryMetric) -> MetricResult:
    return next(m for m in report.metrics if m.metric == metric)


def test_equal_canary_passes() -> None:
    rng = np.random.default_rng(20)
    report = analyse_canary(_group(rng, "c", 12), _group(rng, "b", 30))
    assert report.verdict == Verdict.PASS, report.reasons
    assert report.score == 100.0
    assert all(m.verdict == Verdict.PASS for m in report.metrics)
    assert report.reasons[0].startswith("score 100")


def test_clearly_slower_canary_fails_on_latency() -> None:
    rng = np.random.default_rng(21)
    report = analyse_canary(_group(rng, "c", 12, latency_ms=60.0), _group(rng, "b", 30))
    assert report.verdict == Verdict.FAIL
    latency = _metric(report, CanaryMetric.LATENCY)
    assert latency.verdict == Verdict.FAIL and latency.critical
    assert latency.relative_change == pytest.approx(0.5, abs=0.1)
    assert latency.effect_size == pytest.approx(1.0)  # every canary device slower than every baseline one
    assert any(r.startswith("latency (critical) fail") for r in report.reasons)


def test_latency_statistic_is_scipy_mann_whitney_on_device_values() -> None:
    rng = np.random.default_rng(22)
    canary, baseline = _group(rng, "c", 8, latency_ms=44.0), _group(rng, "b", 15)
    latency = _metric(analyse_canary(canary, baseline), CanaryMetric.LATENCY)

    def mean(d: DeviceMetrics) -> float:
        assert d.latency_ms is not None
        return d.latency_ms.total / sum(d.latency_ms.counts)

    expected = stats.mannwhitneyu([mean(d) for d in canary], [mean(d) for d in baseline], alternative="greater")
    assert latency.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert latency.effect_size == pytest.approx(2 * expected.statistic / (8 * 15) - 1)
    assert latency.n_canary == 8 and latency.n_baseline == 15


def test_device_classes_are_compared_with_their_own_kind() -> None:
    """Baseline mostly fast boards, canary mostly slow ones, same speed per class: pooled devices would
    look slower; per-class normalisation sees no difference."""
    rng = np.random.default_rng(23)
    baseline = _group(rng, "bf", 20, device_class="jetson", latency_ms=10.0) + _group(
        rng, "bs", 6, device_class="rpi", latency_ms=100.0
    )
    canary = _group(rng, "cf", 3, device_class="jetson", latency_ms=10.0) + _group(
        rng, "cs", 9, device_class="rpi", latency_ms=100.0
    )
    stray = _device(rng, "coral-1", device_class="coral")
    report = analyse_canary([*canary, stray], baseline)
    assert _metric(report, CanaryMetric.LATENCY).verdict == Verdict.PASS
    assert report.device_classes == ["jetson", "rpi"]
    assert "coral-1" in report.excluded_devices
    pooled = stats.mannwhitneyu(
        [d.latency_ms.total / sum(d.latency_ms.counts) for d in canary if d.latency_ms],
        [d.latency_ms.total / sum(d.latency_ms.counts) for d in baseline if d.latency_ms],
        alternative="greater",
    )
    assert pooled.pvalue < 0.05  # what a class-blind comparison would have concluded


def test_too_few_devices_is_inconclusive_not_pass() -> None:
    rng = np.random.default_rng(24)
    report = analyse_canary(_group(rng, "c", 2), _group(rng, "b", 30))
    assert report.verdict == Verdict.INCONCLUSIVE
    latency = _metric(report, CanaryMetric.LATENCY)
    assert latency.verdict == Verdict.INCONCLUSIVE and "needs 5 devices" in latency.reason
    assert any("latency (critical) inconclusive" in r for r in report.reasons)


def test_too_few_requests_is_inconclusive() -> None:
    rng = np.random.default_rng(25)
    report = analyse_canary(_group(rng, "c", 6, requests=30), _group(rng, "b", 10, requests=30))
    assert report.verdict == Verdict.INCONCLUSIVE
    assert "needs 500 requests" in _metric(report, CanaryMetric.ERROR_RATE).reason


def test_low_traffic_devices_give_no_device_value() -> None:
    rng = np.random.default_rng(36)
    report = analyse_canary(_group(rng, "c", 6, requests=10), _group(rng, "b", 10))
    latency = _metric(report, CanaryMetric.LATENCY)
    assert latency.verdict == Verdict.INCONCLUSIVE
    assert "no canary device has latency data from >= 20 requests" in latency.reason
    assert latency.details["low_traffic_canary"] == 6


def test_all_zero_baseline_is_inconclusive_with_reason() -> None:
    rng = np.random.default_rng(26)
    report = analyse_canary(_group(rng, "c", 10), _group(rng, "b", 20, latency_ms=0.0))
    assert report.verdict == Verdict.INCONCLUSIVE
    latency = _metric(report, CanaryMetric.LATENCY)
    assert latency.verdict == Verdict.INCONCLUSIVE
    assert "zero on every device" in latency.reason


def test_no_data_is_inconclusive() -> None:
    rng = np.random.default_rng(27)
    assert analyse_canary([], _group(rng, "b", 5)).verdict == Verdict.INCONCLUSIVE
    no_base = analyse_canary(_group(rng, "c", 5), [])
    assert no_base.verdict == Verdict.INCONCLUSIVE and "no baseline telemetry" in no_base.reasons[0]
    silent = [d.model_copy(update={"requests": 0, "errors": 0, "latency_ms": None}) for d in _group(rng, "b", 8)]
    report = analyse_canary(_group(rng, "c", 8), silent)
    assert report.verdict == Verdict.INCONCLUSIVE
    assert "no data" in _metric(report, CanaryMetric.ERROR_RATE).reason


def test_different_time_windows_are_not_compared() -> None:
    rng = np.random.default_rng(28)
    report = analyse_canary(_group(rng, "c", 8, window=(1000.0, 1600.0)), _group(rng, "b", 8))
    assert report.verdict == Verdict.INCONCLUSIVE and "time window" in report.reasons[0]


def test_higher_error_rate_fails_and_zero_errors_pass_explicitly() -> None:
    rng = np.random.default_rng(29)
    report = analyse_canary(_group(rng, "c", 10, error_rate=0.03), _group(rng, "b", 20))
    errors = _metric(report, CanaryMetric.ERROR_RATE)
    assert errors.verdict == Verdict.FAIL and report.verdict == Verdict.FAIL
    clean = analyse_canary(_group(rng, "c", 10, error_rate=0.0), _group(rng, "b", 20, error_rate=0.0))
    zero = _metric(clean, CanaryMetric.ERROR_RATE)
    assert zero.verdict == Verdict.PASS and "no errors in either group" in zero.reason


def test_error_rate_variance_grows_with_device_overdispersion() -> None:
    rng = np.random.default_rng(30)
    baseline = _group(rng, "b", 20, error_rate=0.01)
    even = [_device(rng, f"c-{i}", error_rate=0.0) for i in range(10)]
    even = [d.model_copy(update={"errors": 6}) for d in even]  # 1.5% everywhere
    lumpy = [d.model_copy(update={"errors": 60 if i == 0 else 0}) for i, d in enumerate(even)]  # same total
    p_even = _metric(analyse_canary(even, baseline), CanaryMetric.ERROR_RATE)
    p_lumpy = _metric(analyse_canary(lumpy, baseline), CanaryMetric.ERROR_RATE)
    phi_even, phi_lumpy = p_even.details["overdispersion"], p_lumpy.details["overdispersion"]
    assert isinstance(phi_even, float) and isinstance(phi_lumpy, float) and phi_even < phi_lumpy
    assert p_lumpy.p_value is not None and p_even.p_value is not None and p_lumpy.p_value > p_even.p_value


def test_non_critical_failures_lower_the_score() -> None:
    rng = np.random.default_rng(31)
    report = analyse_canary(_group(rng, "c", 12, dog=0.7, agreement=0.6), _group(rng, "b", 30))
    assert _metric(report, CanaryMetric.PREDICTIONS).verdict == Verdict.FAIL
    assert _metric(report, CanaryMetric.SHADOW_AGREEMENT).verdict == Verdict.FAIL
    assert report.score == pytest.approx(100 * 4 / 6)
    assert report.verdict == Verdict.FAIL  # below the marginal score of 75


def test_configured_critical_metric_fails_the_canary() -> None:
    rng = np.random.default_rng(32)
    config = CanaryConfig(metrics={CanaryMetric.DRIFT: MetricSpec(critical=True)})
    report = analyse_canary(_group(rng, "c", 10, shift=1.0), _group(rng, "b", 20), config)
    drift = _metric(report, CanaryMetric.DRIFT)
    assert drift.verdict == Verdict.FAIL and drift.critical
    assert report.verdict == Verdict.FAIL
    lower_conf = analyse_canary(_group(rng, "c", 10, confidence=0.6), _group(rng, "b", 20))
    assert _metric(lower_conf, CanaryMetric.CONFIDENCE).verdict == Verdict.FAIL


def test_disabled_metric_is_left_out() -> None:
    rng = np.random.default_rng(33)
    config = CanaryConfig(metrics={CanaryMetric.SHADOW_AGREEMENT: MetricSpec(enabled=False)})
    report = analyse_canary(_group(rng, "c", 6), _group(rng, "b", 6), config)
    assert CanaryMetric.SHADOW_AGREEMENT not in {m.metric for m in report.metrics}


def test_report_is_json() -> None:
    rng = np.random.default_rng(34)
    report = analyse_canary(_group(rng, "c", 6), _group(rng, "b", 6))
    again = CanaryReport.model_validate_json(report.model_dump_json())
    assert again.verdict == report.verdict and len(again.metrics) == 6


def test_device_metrics_from_batches() -> None:
    rng = np.random.default_rng(35)
    lat = HistogramAccumulator(LATENCY_BUCKETS_MS)
    lat.observe_many(rng.lognormal(3, 0.2, 100))
    conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    conf.observe_many(rng.uniform(0.5, 1, 100))

    def batch(i: int, device: str, candidate: str) -> TelemetryBatch:
        return TelemetryBatch(
            batch_id=f"batch-{i:04d}",
            device_id=device,
            target="rpi4-arm64",
            model="m",
            version="1",
            window_start=i * 60.0,
            window_end=i * 60.0 + 60,
            requests=100,
            errors=1,
            latency_ms=lat.to_histogram(),
            confidence=conf.to_histogram(),
            predictions={"a": 100},
            shadow=ShadowStats(candidate_version=candidate, compared=10, agreed=9, latency_ms=lat.to_histogram()),
        )

    metrics = device_metrics([batch(0, "d1", "2"), batch(1, "d1", "3"), batch(2, "d2", "2")], shadow_candidate="2")
    assert [m.device_id for m in metrics] == ["d1", "d2"]
    d1 = metrics[0]
    assert (d1.requests, d1.errors, d1.shadow_compared, d1.device_class) == (200, 2, 10, "rpi4-arm64")
    assert (d1.window_start, d1.window_end) == (0.0, 120.0)
    with pytest.raises(ValueError, match="errors exceed"):
        DeviceMetrics(device_id="x", device_class="y", requests=1, errors=2)
