"""Console data shaping (hub/console/views.py): fleet counts, telemetry series, drift distributions."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.telemetry import ReferenceProfile, TelemetryAggregate
from fleet.wire.messages import Histogram, TelemetryBatch
from fleet.wire.sketches import LATENCY_BUCKETS_MS, HistogramAccumulator, serialize_sketch, sketch_from_values
from hub.console.views import feature_distributions, fleet_summary, telemetry_series
from hub.registry import Device


def _device(device_id: str, target: str, online: bool, model: str | None = None, **labels: str) -> Device:
    return Device(
        id=device_id,
        target=target,
        labels=labels,
        credential_hash="x",
        online=online,
        active_model=model,
        active_version="1.0.0" if model else None,
    )


def _batch(
    device_id: str, end: float, latencies: list[float], *, errors: int = 0, sketches: dict[str, str] | None = None
) -> TelemetryBatch:
    latency = HistogramAccumulator(LATENCY_BUCKETS_MS)
    latency.observe_many(np.asarray(latencies))
    return TelemetryBatch(
        batch_id=f"b-{device_id}-{int(end)}",
        device_id=device_id,
        target="rpi4-arm64",
        model="m",
        version="1.0.0",
        window_start=end - 60,
        window_end=end,
        requests=len(latencies),
        errors=errors,
        latency_ms=latency.to_histogram(),
        confidence=Histogram(edges=[0.5, 1.0], counts=[0, 0, 0]),
        feature_sketches=sketches or {},
    )


def test_fleet_summary_counts_by_target_version_state_and_label() -> None:
    summary = fleet_summary(
        [
            _device("a", "rpi4-arm64", True, "m", region="eu"),
            _device("b", "rpi4-arm64", False, region="us"),
            _device("c", "jetson-orin", True, "m", region="eu", room="lab"),
        ]
    )
    assert summary["total"] == 3 and summary["online"] == 2
    assert summary["by_target"] == {"jetson-orin": 1, "rpi4-arm64": 2}
    assert summary["by_version"] == {"m:1.0.0": 2, "none": 1}
    assert summary["by_label"] == {"region=eu": 2, "region=us": 1, "room=lab": 1}
    assert summary["by_state"] == {"idle": 3}


def test_telemetry_series_has_one_point_per_window_in_time_order() -> None:
    series = telemetry_series(
        [_batch("cam-01", 200.0, [10.0] * 9 + [900.0], errors=2), _batch("cam-01", 100.0, [1.0, 2.0])]
    )
    assert series["t"] == [100.0, 200.0]
    assert series["requests"] == [2.0, 10.0] and series["errors"] == [0.0, 2.0]
    p50, p99 = series["latency_p50"], series["latency_p99"]
    assert p50[1] is not None and p99[1] is not None and p50[1] <= 10.0 < p99[1]
    assert series["confidence"] == [None, None]  # no confidence sample: a gap, not a zero


def test_feature_distributions_overlay_reference_and_current_on_common_bins() -> None:
    rng = np.random.default_rng(0)
    reference = ReferenceProfile(feature_sketches={"x": serialize_sketch(sketch_from_values(rng.normal(0, 1, 2000)))})
    shifted = serialize_sketch(sketch_from_values(rng.normal(3, 1, 2000)))
    current = TelemetryAggregate.from_batches([_batch("cam-01", 100.0, [1.0], sketches={"x": shifted})])
    (x,) = feature_distributions(reference, current, bins=10)

    assert x["feature"] == "x" and x["n_current"] == 2000 and len(x["bins"]) == 10
    assert sum(x["reference"]) == pytest.approx(1.0, abs=1e-3) and sum(x["current"]) == pytest.approx(1.0, abs=1e-3)
    # the shift shows: the reference's mass sits in the lower bins, the current's in the upper ones
    assert sum(x["reference"][:5]) > 0.8 and sum(x["current"][5:]) > 0.8


def test_feature_distributions_without_current_telemetry_draw_the_reference_only() -> None:
    reference = ReferenceProfile(
        feature_sketches={"c": serialize_sketch(sketch_from_values([0, 0, 1, 2]))}, feature_kinds={"c": "categorical"}
    )
    (c,) = feature_distributions(reference, TelemetryAggregate())
    assert c["bins"] == ["0", "1", "2"] and c["reference"] == [0.5, 0.25, 0.25]
    assert c["current"] == [0.0, 0.0, 0.0] and c["n_current"] == 0
