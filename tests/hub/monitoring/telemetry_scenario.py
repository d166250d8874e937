"""A small simulated fleet's telemetry for the monitoring query and CLI tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from fleet.telemetry import ReferenceProfile
from fleet.wire.messages import ShadowStats, TelemetryBatch
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS, FeatureSketcher, HistogramAccumulator
from hub.registry import Device, Registry

MODEL = "digits"
BASELINE, CANDIDATE = "1.0", "1.1"
CANARY = [f"rpi-{i:02d}" for i in range(6)] + [f"jet-{i:02d}" for i in range(4)]


def _batch(
    rng: np.random.Generator,
    device: str,
    target: str,
    version: str,
    window: int,
    *,
    latency_ms: float,
    x_shift: float,
    n: int = 200,
) -> TelemetryBatch:
    lat = HistogramAccumulator(LATENCY_BUCKETS_MS)
    lat.observe_many(rng.lognormal(np.log(latency_ms), 0.2, n))
    conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    conf.observe_many(np.clip(rng.normal(0.9, 0.04, n), 0, 1))
    sketches = FeatureSketcher()
    sketches.update_column("x", rng.normal(x_shift, 1, n))
    sketches.update_column("y", rng.uniform(0, 1, n))
    dogs = int(rng.binomial(n, 0.3))
    shadow = None
    if version == BASELINE:
        shadow = ShadowStats(
            candidate_version=CANDIDATE, compared=20, agreed=int(rng.binomial(20, 0.97)), latency_ms=lat.to_histogram()
        )
    return TelemetryBatch(
        batch_id=f"{device}-{version.replace('.', '')}-{window:03d}",
        device_id=device,
        target=target,
        model=MODEL,
        version=version,
        window_start=1000.0 + 60 * window,
        window_end=1060.0 + 60 * window,
        requests=n,
        errors=int(rng.binomial(n, 0.002)),
        latency_ms=lat.to_histogram(),
        confidence=conf.to_histogram(),
        predictions={"cat": n - dogs, "dog": dogs},
        feature_sketches=sketches.to_wire(),
        shadow=shadow,
    )


def scenario(*, slow_candidate: bool = False, jetson_shift: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Telemetry of 20 rpi and 10 jetson devices over 3 minutes; the canary devices run the candidate.

    ``slow_candidate`` makes the candidate 60% slower; ``jetson_shift`` shifts feature x on jetson devices.
    Returns the JSON-ready dump `hub.monitoring.queries.FileSource` reads.
    """
    rng = np.random.default_rng(seed)
    devices = [(f"rpi-{i:02d}", "rpi4-arm64", 40.0) for i in range(20)]
    devices += [(f"jet-{i:02d}", "jetson-orin", 8.0) for i in range(10)]
    batches = []
    for device, target, latency in devices:
        version = CANDIDATE if device in CANARY else BASELINE
        if version == CANDIDATE and slow_candidate:
            latency *= 1.6
        shift = jetson_shift if target == "jetson-orin" else 0.0
        for window in range(3):
            batches.append(_batch(rng, device, target, version, window, latency_ms=latency, x_shift=shift))
    reference = ReferenceProfile.from_arrays(
        {"x": rng.normal(0, 1, 5000), "y": rng.uniform(0, 1, 5000)},
        predictions=["cat"] * 3500 + ["dog"] * 1500,
        confidences=np.clip(rng.normal(0.9, 0.04, 5000), 0, 1),
    )
    labels = {d: {"region": "eu" if int(d[-2:]) % 2 == 0 else "us"} for d, _, _ in devices}
    rollout = {
        "rollout_id": "ro-1",
        "model": MODEL,
        "candidate_version": CANDIDATE,
        "baseline_version": BASELINE,
        "canary_device_ids": CANARY,
        "window_start": 1000.0,
        "window_end": 1180.0,
    }
    return {
        "batches": [b.model_dump(mode="json") for b in batches],
        "reference": reference.model_dump(mode="json"),
        "labels": labels,
        "rollouts": {"ro-1": rollout},
    }


def add_scenario_devices(registry: Registry, labels: dict[str, dict[str, str]]) -> None:
    """The scenario's devices with ``labels``, added as rows (provisioning hashes a secret per device)."""
    with registry.db.session() as session:
        for device, mine in labels.items():
            target = "jetson-orin" if device.startswith("jet") else "rpi4-arm64"
            session.add(Device(id=device, target=target, labels=mine, credential_hash="-"))
    registry.device_labels.invalidate()
