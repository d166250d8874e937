"""``analyse_canary`` (fleet/canary/analysis.py): like compared with like, one verdict from the metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from scipy import stats

from fleet.canary import (
    CanaryConfig,
    CanaryMetric,
    DeviceMetrics,
    MetricSpec,
    SketchPool,
    Verdict,
    analyse_canary,
)
from fleet.telemetry import TelemetryAggregate
from fleet.wire.sketches import deserialize_sketch
from tests.fleet.canary.device_groups import device_group, metric_result, simulated_device


def test_equal_canary_passes() -> None:
    rng = np.random.default_rng(20)
    report = analyse_canary(device_group(rng, "c", 12), device_group(rng, "b", 30))
    assert report.verdict == Verdict.PASS, report.reasons
    assert report.score == 100.0
    assert all(m.verdict == Verdict.PASS for m in report.metrics)
    assert report.reasons[0].startswith("score 100")


def test_device_classes_are_compared_with_their_own_kind() -> None:
    """Baseline mostly fast boards, canary mostly slow ones, same speed per class: pooled devices would
    look slower; per-class normalisation sees no difference."""
    rng = np.random.default_rng(23)
    baseline = device_group(rng, "bf", 20, device_class="jetson", latency_ms=10.0) + device_group(
        rng, "bs", 6, device_class="rpi", latency_ms=100.0
    )
    canary = device_group(rng, "cf", 3, device_class="jetson", latency_ms=10.0) + device_group(
        rng, "cs", 9, device_class="rpi", latency_ms=100.0
    )
    stray = simulated_device(rng, "coral-1", device_class="coral")
    report = analyse_canary([*canary, stray], baseline)
    assert metric_result(report, CanaryMetric.LATENCY).verdict == Verdict.PASS
    assert report.device_classes == ["jetson", "rpi"]
    assert "coral-1" in report.excluded_devices
    pooled = stats.mannwhitneyu(
        [d.latency_ms.total / sum(d.latency_ms.counts) for d in canary if d.latency_ms],
        [d.latency_ms.total / sum(d.latency_ms.counts) for d in baseline if d.latency_ms],
        alternative="greater",
    )
    assert pooled.pvalue < 0.05  # what a class-blind comparison would have concluded


def test_no_data_is_inconclusive() -> None:
    rng = np.random.default_rng(27)
    assert analyse_canary([], device_group(rng, "b", 5)).verdict == Verdict.INCONCLUSIVE
    no_base = analyse_canary(device_group(rng, "c", 5), [])
    assert no_base.verdict == Verdict.INCONCLUSIVE and "no baseline telemetry" in no_base.reasons[0]
    silent = [d.model_copy(update={"requests": 0, "errors": 0, "latency_ms": None}) for d in device_group(rng, "b", 8)]
    report = analyse_canary(device_group(rng, "c", 8), silent)
    assert report.verdict == Verdict.INCONCLUSIVE
    assert "no data" in metric_result(report, CanaryMetric.ERROR_RATE).reason


def test_different_time_windows_are_not_compared() -> None:
    rng = np.random.default_rng(28)
    report = analyse_canary(device_group(rng, "c", 8, window=(1000.0, 1600.0)), device_group(rng, "b", 8))
    assert report.verdict == Verdict.INCONCLUSIVE and "time window" in report.reasons[0]


def test_non_critical_failures_lower_the_score() -> None:
    rng = np.random.default_rng(31)
    report = analyse_canary(device_group(rng, "c", 12, dog=0.7, agreement=0.6), device_group(rng, "b", 30))
    assert metric_result(report, CanaryMetric.PREDICTIONS).verdict == Verdict.FAIL
    assert metric_result(report, CanaryMetric.SHADOW_AGREEMENT).verdict == Verdict.FAIL
    assert report.score == pytest.approx(100 * 4 / 6)
    assert report.verdict == Verdict.FAIL  # below the marginal score of 75


def test_configured_critical_metric_fails_the_canary() -> None:
    rng = np.random.default_rng(32)
    config = CanaryConfig(metrics={CanaryMetric.DRIFT: MetricSpec(critical=True)})
    report = analyse_canary(device_group(rng, "c", 10, shift=1.0), device_group(rng, "b", 20), config)
    drift = metric_result(report, CanaryMetric.DRIFT)
    assert drift.verdict == Verdict.FAIL and drift.critical
    assert report.verdict == Verdict.FAIL
    lower_conf = analyse_canary(device_group(rng, "c", 10, confidence=0.6), device_group(rng, "b", 20))
    assert metric_result(lower_conf, CanaryMetric.CONFIDENCE).verdict == Verdict.FAIL


def test_disabled_metric_is_left_out() -> None:
    rng = np.random.default_rng(33)
    config = CanaryConfig(metrics={CanaryMetric.SHADOW_AGREEMENT: MetricSpec(enabled=False)})
    report = analyse_canary(device_group(rng, "c", 6), device_group(rng, "b", 6), config)
    assert CanaryMetric.SHADOW_AGREEMENT not in {m.metric for m in report.metrics}


def _pool(group: Sequence[DeviceMetrics], asked: list[set[str]], extra: int = 0) -> SketchPool:
    """A pool of ``group``'s sketches that records the devices it was asked for and adds ``extra`` others."""

    def pool(devices: Sequence[DeviceMetrics]) -> TelemetryAggregate:
        asked.append({d.device_id for d in devices})
        agg = TelemetryAggregate()
        for d in group:
            for name, text in d.feature_sketches.items():
                agg._merge_sketch(name, deserialize_sketch(text))
        agg.devices = asked[-1] | {f"other-{i}" for i in range(extra)}
        return agg

    return pool


def test_sketch_pools_replace_the_devices_own_sketches_for_input_drift() -> None:
    """Devices without sketches of their own (the hub's per-device window sums): each group's pool supplies
    its inputs, given the devices compared, and the devices it pooled are counted."""
    rng = np.random.default_rng(34)
    shifted = device_group(rng, "c", 10, shift=1.0)
    bare = [d.model_copy(update={"feature_sketches": {}}) for d in device_group(rng, "c", 10)]
    baseline = device_group(rng, "b", 20)
    asked: list[set[str]] = []
    pools = (_pool(shifted, asked, extra=2), _pool(baseline, asked))
    drift = metric_result(analyse_canary(bare, baseline, sketch_pools=pools), CanaryMetric.DRIFT)
    assert drift.verdict == Verdict.FAIL and (drift.n_canary, drift.n_baseline) == (12, 20)
    assert {d.device_id for d in bare} in asked
    without = metric_result(analyse_canary(bare, baseline), CanaryMetric.DRIFT)
    assert without.verdict == Verdict.INCONCLUSIVE  # the bare devices carry no sketches
