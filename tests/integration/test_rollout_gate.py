"""The quality gate end to end: a hub, real agents on a broker, telemetry from real inference.

A version that installs fine (its self-test vectors are its own outputs) but is worse than the running one
(slower, far less confident, disagreeing) is stopped by the canary gate after the canary, and the canary
devices go back to the version before. The control: the same flow with an equally good version passes the
gate and completes. The gate's analysis settings come from the rollout plan (a small fleet would stay
inconclusive under `CanaryConfig`'s defaults of 5 devices and 500 requests per group).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleet.canary import CanaryConfig, CanaryMetric, MetricSpec
from fleet.rollout import RolloutSnapshot, RolloutState, StateChanged
from fleet.rollout_plan import GateSpec, RolloutPlan, plan_from_cli
from hub.demo.model import TrainedDigits
from hub.rollouts.manager import RolloutManager
from tests.integration.fleet_harness import Harness, manifest_for

DEVICES = 10
CANARY = 4
REQUESTS = 50  # per device; each request is a batch of 8 digits
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def worse_model(tmp_path_factory: pytest.TempPathFactory, trained: TrainedDigits) -> tuple[Path, np.ndarray]:
    """An ONNX digits model that is slower (a chain of shared 256x256 layers), barely trained on shuffled
    labels (low confidence, other answers), and its own self-test outputs, so it installs fine."""
    import torch

    from converters import export_onnx

    class Worse(torch.nn.Module):
        def __init__(self, width: int = 256, depth: int = 32) -> None:
            super().__init__()
            self.inp = torch.nn.Linear(64, width)
            self.mid = torch.nn.Linear(width, width)  # one weight applied depth times: slow, small file
            with torch.no_grad():
                self.mid.weight.copy_(torch.eye(width))
                self.mid.bias.zero_()
            self.out = torch.nn.Linear(width, 10)
            self.depth = depth

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.inp(x))
            for _ in range(self.depth):
                h = torch.relu(self.mid(h))
            return self.out(h)

    torch.manual_seed(1)
    model = Worse()
    features = torch.from_numpy(((trained.test_x - trained.mean) / trained.std).astype(np.float32))
    labels = torch.from_numpy(trained.test_y.copy())[torch.randperm(len(trained.test_y))]
    optimiser = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("mid")], lr=1e-3)
    for _ in range(3):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(features), labels).backward()
        optimiser.step()
    model.eval()
    path = export_onnx(model, (torch.zeros(1, 64),), tmp_path_factory.mktemp("worse") / "digits.onnx")
    golden = ((trained.golden_x - trained.mean) / trained.std).astype(np.float32)
    with torch.no_grad():
        outputs = model(torch.from_numpy(golden)).numpy()
    return path, outputs


def _gate() -> GateSpec:
    """Judge after the canary; small groups suffice. Latency tolerates 100%: ten in-process agents share two
    CPU cores with whatever else runs (a loaded CI box made an equal model look 50% slower on a few devices),
    and the worse model is several times slower. Confidence and predictions are critical too."""
    critical = (CanaryMetric.LATENCY, CanaryMetric.ERROR_RATE, CanaryMetric.CONFIDENCE, CanaryMetric.PREDICTIONS)
    canary = CanaryConfig(
        min_devices=3,
        min_requests=100,
        min_requests_per_device=20,
        latency_tolerance=1.0,
        metrics={m: MetricSpec(critical=m in critical) for m in CanaryMetric},
    )
    return GateSpec(after="canary", retry_interval_s=0.5, max_wait_s=120.0, canary=canary)


def _plan(version: str) -> RolloutPlan:
    return plan_from_cli(
        f"digits:{version}",
        canary=str(CANARY),
        waves="100",
        min_devices=1,
        device_timeout_s=TIMEOUT_S,
        gate_spec=_gate(),
    )


class GateFleet:
    """Ten devices on 1.0.0 and a rollout of 1.1.0 driven up to its gate with real traffic."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        harness.publish("1.0.0")
        self.agents = [harness.agent(f"g{i}") for i in range(DEVICES)]
        assert set(harness.deploy("1.0.0", self.agents, timeout_s=TIMEOUT_S).values()) == {"done"}
        self.inputs = harness.trained.test_x[:8].tolist()

    @property
    def rollouts(self) -> RolloutManager:
        assert self.h.hub.rollouts is not None
        return self.h.hub.rollouts

    def wait(self, rollout_id: str, *states: RolloutState) -> RolloutSnapshot:
        snapshot = self.rollouts.wait(rollout_id, lambda s: s.state in states, TIMEOUT_S)
        assert snapshot.state in states, f"{snapshot.state}: {snapshot.reason}"
        return snapshot

    def to_gate(self, rollout_id: str) -> RolloutSnapshot:
        """Start the rollout, wait for the canary to install and the gate to ask (no telemetry yet:
        inconclusive), then serve traffic on every device and get its telemetry stored."""
        self.rollouts.start_rollout(_plan("1.1.0"), rollout_id=rollout_id)
        snapshot = self.wait(rollout_id, RolloutState.GATE, RolloutState.ABORTING, RolloutState.ABORTED)
        assert snapshot.state == RolloutState.GATE and snapshot.gate is not None
        assert any("no canary telemetry" in r for r in snapshot.gate.reasons), snapshot.gate.reasons
        canary = {d for d, r in snapshot.devices.items() if r.canary}
        assert len(canary) == CANARY
        for _ in range(REQUESTS):  # interleaved, so canary and baseline windows coincide
            for agent in self.agents:
                answer = agent.service.predict(self.inputs)
                assert answer["version"] == ("1.1.0" if agent.config.device_id in canary else "1.0.0")
        ingestor = self.h.hub.ingestor
        assert ingestor is not None
        before = ingestor.stored
        sent = sum(agent.flush_telemetry() for agent in self.agents)
        assert sent == DEVICES  # one batch per device (one version each); the hub may store some at once
        assert ingestor.wait_stored(before + sent, TIMEOUT_S)
        self.rollouts.wake()
        return snapshot

    def answers(self) -> dict[str, str]:
        return {a.config.device_id: a.service.predict(self.inputs)["version"] for a in self.agents}


@pytest.fixture
def gate_fleet(harness: Harness) -> GateFleet:
    return GateFleet(harness)


def _events(manager: RolloutManager, rollout_id: str) -> list[StateChanged]:
    return [a for a in manager.store.history(rollout_id) if isinstance(a, StateChanged)]


def test_worse_model_is_stopped_by_the_gate_and_the_canary_rolled_back(
    gate_fleet: GateFleet, worse_model: tuple[Path, np.ndarray]
) -> None:
    h = gate_fleet.h
    path, outputs = worse_model
    h.hub.publish(manifest_for(h.trained, "1.1.0"), path, h.trained.golden_x, outputs)
    gated = gate_fleet.to_gate("ro-worse")
    canary = {d for d, r in gated.devices.items() if r.canary}
    snapshot = gate_fleet.wait("ro-worse", RolloutState.ABORTED, RolloutState.COMPLETED, RolloutState.PAUSED)
    assert snapshot.state == RolloutState.ABORTED, snapshot.reason
    (failed,) = [e for e in _events(gate_fleet.rollouts, "ro-worse") if e.event == "gate_fail"]
    for reason in ("latency (critical) fail", "confidence (critical) fail", "predictions (critical) fail"):
        assert reason in failed.reason, failed.reason
    assert any(t.event == "gate_fail" and t.reason == failed.reason for t in snapshot.history)
    # the canary installed fine and went back (confirmed); nobody else was sent 1.1.0
    assert {d for d, r in snapshot.devices.items() if r.phase == "succeeded" and r.rolled_back} == canary
    assert {r.phase for d, r in snapshot.devices.items() if d not in canary} == {"pending"}
    assert set(gate_fleet.answers().values()) == {"1.0.0"}
    deployment = h.hub.registry.get_deployment("ro-worse")
    assert set(deployment.device_ids) == canary and deployment.status == "aborted"
    assert set(h.hub.wait_deployment("ro-worse", TIMEOUT_S).values()) == {"done"}  # installed, then judged
    assert set(h.hub.wait_deployment("ro-worse.rollback", TIMEOUT_S).values()) == {"done"}


def test_equally_good_model_passes_the_gate_and_completes(gate_fleet: GateFleet) -> None:
    gate_fleet.h.publish("1.1.0")  # the same weights as 1.0.0
    gate_fleet.to_gate("ro-same")
    snapshot = gate_fleet.wait("ro-same", RolloutState.COMPLETED, RolloutState.ABORTED, RolloutState.PAUSED)
    assert snapshot.state == RolloutState.COMPLETED, snapshot.reason
    events = [e.event for e in _events(gate_fleet.rollouts, "ro-same")]
    assert "gate_pass" in events and "gate_fail" not in events
    assert set(gate_fleet.answers().values()) == {"1.1.0"}
    assert gate_fleet.h.hub.registry.get_deployment("ro-same").status == "completed"
