"""The rollout gate's analysis: canary statistics on the stored telemetry of a rollout's devices."""

from __future__ import annotations

from collections.abc import Callable

from fleet.canary import CanaryConfig, DeviceMetrics, analyse_canary, device_metrics
from fleet.rollout import GateInput, RequestGate, RolloutSnapshot
from hub.registry import Registry

__all__ = ["GateAnalysis", "canary_gate"]

GateAnalysis = Callable[[RequestGate, RolloutSnapshot], GateInput]


def canary_gate(registry: Registry, config: CanaryConfig | None = None) -> GateAnalysis:
    """A gate analysis: `analyse_canary` on telemetry since the request's ``since``, candidates on the new
    version against the baseline devices still on another version, device classes as in the rollout.

    The analysis settings are ``config`` when given, else the rollout plan's ``gate.canary``."""

    def analyse(request: RequestGate, snapshot: RolloutSnapshot) -> GateInput:
        batches = [b for b in registry.telemetry_batches(request.model) if b.window_end >= request.since]
        candidates, baseline = set(request.candidates), set(request.baseline)

        def metrics(ids: set[str], on_version: bool) -> list[DeviceMetrics]:
            chosen = [b for b in batches if b.device_id in ids and (b.version == request.version) == on_version]
            out = []
            for m in device_metrics(chosen, shadow_candidate=request.version):
                record = snapshot.devices.get(m.device_id)
                out.append(m.model_copy(update={"device_class": record.device_class}) if record else m)
            return out

        settings = config or (snapshot.plan.gate.canary if snapshot.plan.gate is not None else CanaryConfig())
        return analyse_canary(metrics(candidates, True), metrics(baseline, False), settings)

    return analyse
