"""Simulated canary and baseline devices for the canary analysis tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from fleet.canary import (
    CanaryMetric,
    CanaryReport,
    DeviceMetrics,
    MetricResult,
)
from fleet.wire.sketches import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS_MS,
    HistogramAccumulator,
    serialize_sketch,
    sketch_from_values,
)


def simulated_device(
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
    """One device's metrics drawn at random around the given means."""
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


def device_group(rng: np.random.Generator, prefix: str, n: int, **kw: Any) -> list[DeviceMetrics]:
    return [simulated_device(rng, f"{prefix}-{i}", **kw) for i in range(n)]


def metric_result(report: CanaryReport, metric: CanaryMetric) -> MetricResult:
    return next(m for m in report.metrics if m.metric == metric)
