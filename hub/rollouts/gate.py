"""The rollout gate's analysis: canary statistics on the window aggregates of a rollout's devices."""

from __future__ import annotations

from collections.abc import Callable

from fleet.canary import CanaryConfig
from fleet.rollout import GateInput, RequestGate, RolloutSnapshot
from hub.monitoring.canary_windows import canary_from_windows
from hub.registry import Registry

__all__ = ["GateAnalysis", "canary_gate"]

GateAnalysis = Callable[[RequestGate, RolloutSnapshot], GateInput]


def canary_gate(registry: Registry, config: CanaryConfig | None = None) -> GateAnalysis:
    """A gate analysis: `analyse_canary` on the device windows holding telemetry since the request's ``since``
    (`hub.monitoring.canary_windows`), candidates on the new version against the baseline devices still on
    another version, device classes as in the rollout.

    The analysis settings are ``config`` when given, else the rollout plan's ``gate.canary``."""

    def analyse(request: RequestGate, snapshot: RolloutSnapshot) -> GateInput:
        candidates, baseline = set(request.candidates), set(request.baseline)

        def device_class(device_id: str) -> str | None:
            record = snapshot.devices.get(device_id)
            return record.device_class if record is not None else None

        settings = config or (snapshot.plan.gate.canary if snapshot.plan.gate is not None else CanaryConfig())
        return canary_from_windows(
            registry.windows.in_range(request.model, since=request.since),
            in_canary=lambda device_id, version: device_id in candidates and version == request.version,
            in_baseline=lambda device_id, version: device_id in baseline and version != request.version,
            since=request.since,
            shadow_candidate=request.version,
            device_class=device_class,
            config=settings,
        )

    return analyse
