"""Per-device metrics from telemetry batches (fleet/canary/inputs.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.canary import (
    DeviceMetrics,
    device_metrics,
)
from fleet.wire.messages import ShadowStats, TelemetryBatch
from fleet.wire.sketches import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS_MS,
    HistogramAccumulator,
)


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
