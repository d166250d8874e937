"""A started hub holding what every console page shows: the monitoring scenario's devices, versions and
telemetry (windows in the last minutes), one device online, and a running rollout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fleet.rollout_plan import plan_from_cli
from fleet.wire import topics
from fleet.wire.bundle import BundleManifest, TensorSpec
from fleet.wire.messages import DeviceState, TelemetryBatch, encode
from fleet.wire.mqtt import PahoBroker
from hub.app import Hub
from hub.config import HubSettings
from tests.hub.monitoring.monitoring_fleet import MODEL, TARGETS, VERSIONS, hub_scenario, install

ROLLOUT_ID = "ro-console"
CANDIDATE = f"{MODEL}:{VERSIONS['1.1']}"


@dataclass
class ConsoleFleet:
    """The hub and what was put in it."""

    hub: Hub
    batches: list[TelemetryBatch]

    def device_with_telemetry(self) -> str:
        """The device with the most telemetry windows."""
        per_device: dict[str, int] = {}
        for b in self.batches:
            per_device[b.device_id] = per_device.get(b.device_id, 0) + 1
        return max(per_device, key=lambda d: per_device[d])


@contextmanager
def console_fleet(root: Path) -> Iterator[ConsoleFleet]:
    """A started hub with the scenario installed, its telemetry stored, rollout ``ROLLOUT_ID`` running and
    telemetry of its first minutes stored."""
    hub = Hub(HubSettings(data_dir=root / "hub"))
    hub.start()
    try:
        data = hub_scenario(jetson_shift=1.0, slow_candidate=True)
        install(hub, data, root)
        _publish_converted_model(hub, root)
        assert hub.ingestor is not None and hub.rollouts is not None
        for batch in data["batches"]:
            hub.ingestor.submit(batch)
        assert hub.ingestor.wait_stored(len(data["batches"]), timeout_s=30)
        rollout = hub.rollouts.start_rollout(
            plan_from_cli(CANDIDATE, canary="20%", waves="50,100"), rollout_id=ROLLOUT_ID
        )
        live = _rollout_telemetry(rollout.created_at, {d.device_id for d in rollout.devices.values() if d.canary})
        for batch in live:
            hub.ingestor.submit(batch)
        assert hub.ingestor.wait_stored(len(data["batches"]) + len(live), timeout_s=30)
        yield ConsoleFleet(hub, data["batches"] + live)
    finally:
        hub.stop()


def bring_online(hub: Hub, device_id: str) -> None:
    """Provision ``device_id`` and have it report itself online over MQTT, as an agent does."""
    _, secret = hub.registry.provision_device(device_id, TARGETS["rpi"], {"region": "eu"})
    device = PahoBroker(hub.broker_address.with_credentials(device_id, secret), client_id=device_id)
    try:
        state = DeviceState(device_id=device_id, online=True, target=TARGETS["rpi"], ts=time.time())
        device.publish_and_wait(topics.device_topic(device_id, "state"), encode(state), retain=True)
    finally:
        device.close()


def _publish_converted_model(hub: Hub, root: Path) -> None:
    """A second model whose variants carry conversion metrics (size, accuracy, latency), as `convert` records."""
    model_path = root / "keywords.onnx"
    model_path.write_bytes(b"not a real model: the console reads only the registry")
    x = np.zeros((1, 2), dtype=np.float32)
    for target, precision, accuracy, latency in (
        ("rpi4-arm64", "int8", 0.912, 14.2),
        ("jetson-orin", "fp16", 0.921, 3.1),
    ):
        manifest = BundleManifest(
            model="keywords",
            version="2.0.0",
            target=target,
            runtime="onnxruntime",
            precision=precision,
            model_file="keywords.onnx",
            input=TensorSpec(name="input", shape=[-1, 2]),
        )
        hub.publish(manifest, model_path, x, x, metrics={"accuracy": accuracy, "latency_ms": latency})


def _rollout_telemetry(started_at: float, canary: set[str]) -> list[TelemetryBatch]:
    """Telemetry of the three minutes after the rollout began: its canary devices on the candidate, the others on
    the baseline, so that the rollout's canary analysis has both sides to compare."""
    batches = hub_scenario(now=started_at + 180, seed=1)["batches"]
    return [
        b.model_copy(
            update={
                "batch_id": f"live-{i:04d}",
                "version": VERSIONS["1.1"] if b.device_id in canary else VERSIONS["1.0"],
                "shadow": None,
            }
        )
        for i, b in enumerate(batches)
    ]
