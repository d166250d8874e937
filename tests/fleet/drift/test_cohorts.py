"""Cohorts from telemetry batches (fleet/drift/cohorts.py) and the drift report over them."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.drift import (
    CONFIDENCE,
    PREDICTIONS,
    DriftReport,
    analyse_drift,
    group_cohorts,
)
from fleet.errors import FleetConfigError
from fleet.telemetry import ReferenceProfile
from fleet.wire.messages import TelemetryBatch
from fleet.wire.sketches import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS_MS,
    HistogramAccumulator,
    serialize_sketch,
    sketch_from_values,
)


def _batch(device: str, target: str, rng: np.random.Generator, *, shift: float, dog: float) -> TelemetryBatch:
    n = 300
    conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    conf.observe_many(np.clip(rng.normal(0.85 - shift / 4, 0.05, n), 0, 1))
    lat = HistogramAccumulator(LATENCY_BUCKETS_MS)
    lat.observe_many(rng.lognormal(3, 0.3, n))
    dogs = int(n * dog)
    return TelemetryBatch(
        batch_id=f"b-{device}-{int(rng.integers(1 << 30))}",
        device_id=device,
        target=target,
        model="digits",
        version="2.0",
        window_start=0,
        window_end=60,
        requests=n,
        errors=0,
        latency_ms=lat.to_histogram(),
        confidence=conf.to_histogram(),
        predictions={"cat": n - dogs, "dog": dogs},
        feature_sketches={
            "x": serialize_sketch(sketch_from_values(rng.normal(shift, 1, n))),
            "y": serialize_sketch(sketch_from_values(rng.uniform(0, 1, n))),
        },
    )


def test_cohorts_predictions_and_confidence_from_batches() -> None:
    rng = np.random.default_rng(15)
    ref_conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    ref_conf.observe_many(np.clip(rng.normal(0.85, 0.05, 5000), 0, 1))
    reference = ReferenceProfile(
        feature_sketches={
            "x": serialize_sketch(sketch_from_values(rng.normal(0, 1, 5000))),
            "y": serialize_sketch(sketch_from_values(rng.uniform(0, 1, 5000))),
        },
        predictions={"cat": 4000, "dog": 1000},
        confidence=ref_conf.to_histogram(),
    )
    batches = [_batch(f"rpi-{i}", "rpi4-arm64", rng, shift=0.0, dog=0.2) for i in range(10)]
    batches += [_batch(f"jet-{i}", "jetson-orin", rng, shift=1.0, dog=0.5) for i in range(10)]
    labels = {f"rpi-{i}": {"region": "eu"} for i in range(10)} | {f"jet-{i}": {"region": "us"} for i in range(10)}
    cohorts = group_cohorts(batches, by=["target"], selectors={"eu": "region=eu"}, device_labels=labels)
    assert set(cohorts) == {"all", "target=rpi4-arm64", "target=jetson-orin", "eu"}
    assert cohorts["eu"].devices == {f"rpi-{i}" for i in range(10)}
    report = analyse_drift(reference, cohorts, model="digits", version="2.0")
    by_name = {c.cohort: c for c in report.cohorts}
    rpi, jetson = by_name["target=rpi4-arm64"], by_name["target=jetson-orin"]
    assert rpi.dataset_drift is False and jetson.dataset_drift is True
    assert [f.feature for f in jetson.features if f.drifted] == ["x"]
    assert jetson.predictions is not None and jetson.predictions.drifted is True
    assert jetson.predictions.feature == PREDICTIONS
    assert rpi.predictions is not None and rpi.predictions.drifted is False
    assert jetson.confidence is not None and jetson.confidence.feature == CONFIDENCE
    assert jetson.confidence.drifted is True and rpi.confidence is not None and rpi.confidence.drifted is False
    assert "target=jetson-orin" in report.drifted_cohorts and "target=rpi4-arm64" not in report.drifted_cohorts
    again = DriftReport.model_validate_json(report.model_dump_json())
    assert again.cohorts[0].features[0].feature == report.cohorts[0].features[0].feature
    assert {row["drift"] for row in report.rows()} <= {"DRIFT", "ok"}


def test_unknown_cohort_dimension_is_refused() -> None:
    with pytest.raises(FleetConfigError, match="dimension"):
        group_cohorts([], by=["colour"])
