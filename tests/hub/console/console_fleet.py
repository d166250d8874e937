"""A started hub holding what every console page shows: the monitoring scenario's devices, versions and
telemetry (windows in the last minutes), one device online, and a running rollout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fleet.rollout_plan import plan_from_cli
from fleet.wire.messages import TelemetryBatch
from hub.app import Hub
from hub.config import HubSettings
from tests.hub.monitoring.monitoring_fleet import MODEL, VERSIONS, hub_scenario, install

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
    """A started hub with the scenario installed, its telemetry stored and rollout ``ROLLOUT_ID`` running."""
    hub = Hub(HubSettings(data_dir=root / "hub"))
    hub.start()
    try:
        data = hub_scenario(jetson_shift=1.0, slow_candidate=True)
        install(hub, data, root)
        assert hub.ingestor is not None and hub.rollouts is not None
        for batch in data["batches"]:
            hub.ingestor.submit(batch)
        assert hub.ingestor.wait_stored(len(data["batches"]), timeout_s=30)
        hub.rollouts.start_rollout(plan_from_cli(CANDIDATE, canary="10%", waves="50,100"), rollout_id=ROLLOUT_ID)
        yield ConsoleFleet(hub, data["batches"])
    finally:
        hub.stop()
