"""The telemetry scenario as a hub holds it: semver versions, windows in the last minutes, published
bundles carrying the drift reference, provisioned devices."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from fleet.wire.bundle import BundleManifest, TensorSpec
from fleet.wire.messages import TelemetryBatch
from hub.app import Hub
from tests.hub.monitoring.telemetry_scenario import BASELINE, CANARY, CANDIDATE, MODEL, scenario

VERSIONS = {BASELINE: "1.0.0", CANDIDATE: "1.1.0"}
TARGETS = {"rpi": "rpi4-arm64", "jet": "jetson-orin"}
__all__ = ["CANARY", "MODEL", "VERSIONS", "hub_scenario", "install"]


def hub_scenario(*, now: float | None = None, **kw: Any) -> dict[str, Any]:
    """`scenario` with semver versions and windows ending by ``now``."""
    data = scenario(**kw)
    shift = (time.time() if now is None else now) - 1180.0
    batches = []
    for raw in data["batches"]:
        raw = {
            **raw,
            "version": VERSIONS[raw["version"]],
            "window_start": raw["window_start"] + shift,
            "window_end": raw["window_end"] + shift,
        }
        if raw.get("shadow"):
            raw["shadow"] = {**raw["shadow"], "candidate_version": VERSIONS[raw["shadow"]["candidate_version"]]}
        batches.append(TelemetryBatch.model_validate(raw))
    return {**data, "batches": batches}


def install(hub: Hub, data: dict[str, Any], root: Path) -> None:
    """Publish both versions for both targets with the scenario's reference, and provision its devices."""
    model_path = root / "model.onnx"
    model_path.write_bytes(b"not a real model: monitoring reads only the bundle's reference")
    x = np.zeros((1, 2), dtype=np.float32)
    for version in VERSIONS.values():
        for target in TARGETS.values():
            manifest = BundleManifest(
                model=MODEL,
                version=version,
                target=target,
                runtime="onnxruntime",
                model_file="model.onnx",
                input=TensorSpec(name="input", shape=[-1, 2]),
            )
            hub.publish(manifest, model_path, x, x, reference=data["reference"])
    for device, labels in data["labels"].items():
        hub.registry.provision_device(device, TARGETS[device[:3]], labels)
