"""Prometheus fleet metrics (hub/metrics.py): names, units, bucket arithmetic, no per-device labels."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fleet.drift import analyse_drift
from fleet.telemetry import TelemetryAggregate
from fleet.wire.messages import Histogram, ShadowStats, TelemetryBatch
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS, HistogramAccumulator, sketch_from_values
from hub.monitoring.metrics import OTHER_LABEL, FleetMetrics


def _batch(i: int, *, device: str = "dev-1", target: str = "rpi4-arm64", predictions: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    lat = HistogramAccumulator(LATENCY_BUCKETS_MS)
    lat.observe_many([4.0, 40.0, 400.0, 4000.0])
    conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    conf.observe_many([0.42, 0.97, 0.97, 0.61])
    return TelemetryBatch(
        batch_id=f"batch-{i:04d}",
        device_id=device,
        target=target,
        model="digits",
        version="1.0",
        window_start=0,
        window_end=60,
        requests=4,
        errors=1,
        offloaded=2,
        latency_ms=lat.to_histogram(),
        confidence=conf.to_histogram(),
        predictions=predictions if predictions is not None else {"3": 3, "7": 1},
        shadow=ShadowStats(candidate_version="1.1", compared=4, agreed=3, latency_ms=lat.to_histogram()),
    )


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples[(name, tuple(sorted(labels.items())))]


def test_batches_become_counters_and_histograms_in_base_units() -> None:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    metrics.observe_batches([_batch(1), _batch(2, device="dev-2")])
    s = _samples(registry)
    dev = {"model": "digits", "version": "1.0", "target": "rpi4-arm64"}
    assert _get(s, "edgefleet_device_inference_requests_total", **dev) == 8
    assert _get(s, "edgefleet_device_inference_errors_total", **dev) == 2
    assert _get(s, "edgefleet_device_inference_offloaded_total", **dev) == 4
    assert _get(s, "edgefleet_device_predictions_total", **dev, label="3") == 6
    lat = "edgefleet_device_inference_latency_seconds"
    assert _get(s, f"{lat}_bucket", **dev, le="0.005") == 2  # 4 ms
    assert _get(s, f"{lat}_bucket", **dev, le="0.05") == 4  # + 40 ms
    assert _get(s, f"{lat}_bucket", **dev, le="0.5") == 6  # + 400 ms
    assert _get(s, f"{lat}_bucket", **dev, le="10.0") == 8
    assert _get(s, f"{lat}_bucket", **dev, le="+Inf") == 8
    assert _get(s, f"{lat}_count", **dev) == 8
    assert _get(s, f"{lat}_sum", **dev) == pytest.approx(2 * 4.444)
    conf = "edgefleet_device_prediction_confidence_ratio"
    assert _get(s, f"{conf}_bucket", **dev, le="0.45") == 2
    assert _get(s, f"{conf}_bucket", **dev, le="1.0") == 8
    shadow = {"model": "digits", "version": "1.0", "candidate": "1.1"}
    assert _get(s, "edgefleet_shadow_agreements_total", **shadow) == 6
    assert _get(s, "edgefleet_telemetry_batches_total", result="accepted") == 2
    assert all("device" not in dict(labels) and "device_id" not in dict(labels) for _, labels in s)


def test_histograms_with_other_edges_are_rebucketed_upwards() -> None:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    odd = Histogram(edges=[4.0, 60.0], counts=[1, 2, 3], total=500.0)  # <=4 ms, <=60 ms, >60 ms
    metrics.latency.add(("m", "v", "t"), odd, scale=0.001)
    s = _samples(registry)
    lat = "edgefleet_device_inference_latency_seconds_bucket"
    assert _get(s, lat, model="m", version="v", target="t", le="0.005") == 1  # 4 ms sits under 5 ms
    assert _get(s, lat, model="m", version="v", target="t", le="0.075") == 3  # 60 ms sits under 75 ms
    assert _get(s, lat, model="m", version="v", target="t", le="10.0") == 3  # overflow stays overflow
    assert _get(s, lat, model="m", version="v", target="t", le="+Inf") == 6


def test_prediction_labels_are_capped() -> None:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry, max_prediction_labels=2)
    metrics.observe_batch(_batch(1, predictions={"a": 1, "b": 1, "c": 5, "d": 1}))
    s = _samples(registry)
    labels = {dict(k)["label"] for name, k in s if name == "edgefleet_device_predictions_total"}
    assert labels == {"a", "b", OTHER_LABEL}
    dev = {"model": "digits", "version": "1.0", "target": "rpi4-arm64"}
    assert _get(s, "edgefleet_device_predictions_total", **dev, label=OTHER_LABEL) == 6


def test_drift_report_series_are_replaced_not_accumulated() -> None:
    rng = np.random.default_rng(50)
    reference = TelemetryAggregate()
    reference.sketches["x"] = sketch_from_values(rng.normal(size=5000))
    reference.sketches["y"] = sketch_from_values(rng.normal(size=5000))
    drifted = TelemetryAggregate()
    drifted.sketches["x"] = sketch_from_values(rng.normal(1, 1, 5000))
    drifted.sketches["y"] = sketch_from_values(rng.normal(size=5000))
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    metrics.record_drift(analyse_drift(reference, {"all": drifted, "eu": drifted}, model="digits", version="1.0"))
    s = _samples(registry)
    key = {"model": "digits", "version": "1.0", "cohort": "all"}
    assert _get(s, "edgefleet_drift_detected", **key, feature="x") == 1
    assert _get(s, "edgefleet_drift_detected", **key, feature="y") == 0
    assert _get(s, "edgefleet_drift_score", **key, feature="x", test="wasserstein") > 0.5
    metrics.record_drift(analyse_drift(reference, {"all": drifted}, model="digits", version="1.0"))
    cohorts = {dict(k)["cohort"] for name, k in _samples(registry) if name.startswith("edgefleet_drift")}
    assert cohorts == {"all"}


def test_devices_and_rollout_state() -> None:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    metrics.set_devices({"rpi4-arm64": 90}, {"rpi4-arm64": 100, "jetson": 5})
    metrics.set_devices({"rpi4-arm64": 80}, {"rpi4-arm64": 100})
    s = _samples(registry)
    assert _get(s, "edgefleet_devices_online", target="rpi4-arm64") == 80
    assert ("edgefleet_devices_registered", (("target", "jetson"),)) not in s
    metrics.set_rollout_state("r1", "digits", "1.1", "canary")
    metrics.set_rollout_state("r1", "digits", "1.1", "paused")
    s = _samples(registry)
    base = {"rollout": "r1", "model": "digits", "version": "1.1"}
    assert _get(s, "edgefleet_rollout_state", **base, state="canary") == 0
    assert _get(s, "edgefleet_rollout_state", **base, state="paused") == 1
    metrics.forget_rollout("r1")
    assert not any(name == "edgefleet_rollout_state" for name, _ in _samples(registry))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_exposition_passes_promtool_lint() -> None:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    metrics.observe_batch(_batch(1))
    metrics.set_devices({"rpi4-arm64": 1}, {"rpi4-arm64": 1})
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=generate_latest(registry), capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
