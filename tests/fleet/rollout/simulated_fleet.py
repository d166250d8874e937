"""A small simulated fleet that carries out what ``step`` asks, for the rollout tests (pure: no broker, no clock)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TypeVar

from fleet.rollout import (
    Action,
    DeployTo,
    DeviceStatus,
    GateVerdict,
    RequestGate,
    RollBack,
    RolloutSnapshot,
    Verdict,
    step,
)
from fleet.rollout_plan import (
    CanarySpec,
    FailureThreshold,
    PercentWaves,
    RolloutPlan,
)
from fleet.selection import Variant
from fleet.wire.messages import UpdateState

MODEL, OLD, NEW = "digits", "1.0.0", "2.0.0"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()  # a Monday, noon UTC
TARGETS = ("x86-onnx-cpu", "rpi4-arm64", "jetson-orin", "intel-openvino")
VARIANTS = [
    Variant(variant_id=f"{t}-v", target=t, precision=p, size_bytes=100_000, latency_ms=5.0)
    for t, p in [
        ("x86-onnx-cpu", "int8"),
        ("rpi4-arm64", "int8"),
        ("jetson-orin", "fp16"),
        ("intel-openvino", "int8"),
    ]
]
Behaviour = Literal["ok", "fail", "silent"]
ActionT = TypeVar("ActionT")


@dataclass
class SimDevice:
    """A device that installs what it is told after ``latency_s`` (or fails, or never answers)."""

    device_id: str
    target: str
    labels: dict[str, str] = field(default_factory=dict)
    behaviour: Behaviour = "ok"
    latency_s: float = 30.0
    active: str | None = OLD
    deployment_id: str | None = None
    update_state: UpdateState = UpdateState.IDLE
    error: str | None = None
    order: tuple[float, str, str] | None = None  # issued_at, deployment_id, version
    deployments: int = 0

    def receive(self, now: float, deployment_id: str, version: str) -> None:
        self.order = (now, deployment_id, version)
        self.deployment_id, self.update_state, self.error = deployment_id, UpdateState.DOWNLOAD, None

    def advance(self, now: float) -> None:
        if self.order is None or now < self.order[0] + self.latency_s:
            return
        _, deployment_id, version = self.order
        self.order = None
        if deployment_id.endswith(".rollback"):
            self.active, self.update_state = OLD, UpdateState.DONE
        elif self.behaviour == "ok":
            self.active, self.update_state = version, UpdateState.DONE
        elif self.behaviour == "fail":  # the agent rolls itself back and says why
            self.update_state, self.error = UpdateState.FAILED, "self-test: 3/10 golden vectors off"
        else:
            self.order = (now, deployment_id, version)  # silent: keeps "downloading" forever

    def status(self) -> DeviceStatus:
        return DeviceStatus(
            device_id=self.device_id,
            target=self.target,
            labels=self.labels,
            active_model=MODEL if self.active else None,
            active_version=self.active,
            update_state=self.update_state,
            deployment_id=self.deployment_id,
            error=self.error,
        )


class SimFleet:
    def __init__(self, devices: Iterable[SimDevice]) -> None:
        self.devices = {d.device_id: d for d in devices}
        self.log: list[Action] = []

    def statuses(self, now: float) -> list[DeviceStatus]:
        for device in self.devices.values():
            device.advance(now)
        return [d.status() for d in self.devices.values()]

    def apply(self, now: float, actions: list[Action]) -> None:
        self.log += actions
        for action in actions:
            if isinstance(action, DeployTo):
                for device_id in action.device_ids:
                    device = self.devices[device_id]
                    assert action.variant.target == device.target  # never a wrong variant
                    device.deployments += 1
                    device.receive(now, action.deployment_id, action.version)
            elif isinstance(action, RollBack):
                for device_id in action.device_ids:
                    self.devices[device_id].receive(now, action.deployment_id, OLD)

    def of(self, kind: type[ActionT]) -> list[ActionT]:
        return [a for a in self.log if isinstance(a, kind)]


def mixed_fleet(counts: dict[str, int], behaviours: dict[str, Behaviour] | None = None) -> SimFleet:
    behaviours = behaviours or {}
    devices = []
    for target, n in counts.items():
        for i in range(n):
            devices.append(SimDevice(f"{target}-{i:03d}", target, {"env": "prod"}, behaviours.get(target, "ok")))
    return SimFleet(devices)


FLEET = {"x86-onnx-cpu": 20, "rpi4-arm64": 10, "jetson-orin": 6, "intel-openvino": 4}
Gate = Callable[[RequestGate, float], GateVerdict | None]


def plan(**overrides: object) -> RolloutPlan:
    base: dict[str, object] = {
        "model": MODEL,
        "version": NEW,
        "canary": CanarySpec(percent=10),
        "waves": PercentWaves(steps=[25, 50, 100]),
        "gate": None,
        "failure": FailureThreshold(max_rate=0.05, min_devices=10),
    }
    base.update(overrides)
    return RolloutPlan.model_validate(base)


def drive(
    snapshot: RolloutSnapshot,
    fleet: SimFleet,
    *,
    now: float = T0,
    gate: Gate | None = None,
    until: Callable[[RolloutSnapshot], bool] = lambda snapshot: snapshot.final,
    dt: float = 60.0,
    max_steps: int = 500,
    pending: RequestGate | None = None,
) -> tuple[RolloutSnapshot, float]:
    """Step every ``dt`` seconds, carry out actions, answer gate requests, until ``until`` holds."""
    for _ in range(max_steps):
        verdict = gate(pending, now) if (gate and pending) else None
        if verdict is not None:
            pending = None
        snapshot, actions = step(snapshot, now, fleet.statuses(now), gate_verdict=verdict)
        fleet.apply(now, actions)
        pending = next((a for a in actions if isinstance(a, RequestGate)), pending)
        if until(snapshot):
            return snapshot, now
        now += dt
    raise AssertionError(f"rollout did not settle: {snapshot.state} {snapshot.reason}")


def always(verdict: Verdict) -> Gate:
    return lambda request, now: GateVerdict(verdict=verdict, reasons=(f"{verdict} on wave {request.wave}",))


def deployed_ids(fleet: SimFleet) -> list[str]:
    return [d for a in fleet.of(DeployTo) for d in a.device_ids]
