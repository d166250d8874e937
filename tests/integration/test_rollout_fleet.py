"""Rollouts end to end: a hub driving real agents of two device classes (x86 CPU and Jetson, both ONNX
Runtime; the Jetson variant runs on the CPU execution provider here) on the embedded broker and Mosquitto."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from agent.config import AgentConfig
from agent.daemon import Agent
from fleet.rollout import RolloutSnapshot, RolloutState
from fleet.rollout.snapshot import ENGAGED
from fleet.rollout_plan import RolloutPlan, plan_from_cli
from hub.app import Hub
from hub.config import HubSettings
from hub.registry.rollouts import RolloutStore
from hub.rollouts.manager import RolloutManager
from hub.rollouts.operations import request_command
from tests.integration.fleet_harness import Harness, manifest_for

TARGETS = ("x86-onnx-cpu", "jetson-orin")
TIMEOUT_S = 90.0


class MixedFleet:
    """The harness's hub and agents, with devices of several targets and a restartable hub."""

    def __init__(self, harness: Harness, broker_url: str | None) -> None:
        self.h = harness
        self.broker_url = broker_url
        self.agents: dict[str, Agent] = {}

    @property
    def hub(self) -> Hub:
        return self.h.hub

    @property
    def rollouts(self) -> RolloutManager:
        assert self.hub.rollouts is not None
        return self.hub.rollouts

    def publish(self, version: str, *, broken_on: str | None = None) -> None:
        """Publish ``version`` for every target; ``broken_on``'s bundle carries wrong self-test outputs."""
        trained = self.h.trained
        if not any(v.version == version for v in self.hub.registry.list_versions("digits")):
            self.hub.registry.add_version("digits", version)
        for target in TARGETS:
            golden = trained.golden_logits + 5.0 if target == broken_on else trained.golden_logits
            manifest = manifest_for(trained, version).model_copy(update={"target": target})
            self.hub.publish(manifest, trained.onnx_path, trained.golden_x, np.asarray(golden))

    def device(self, name: str, target: str) -> Agent:
        """Provision a device of ``target`` and start its agent (as the harness does for x86)."""
        device_id = f"{self.h.prefix}-{name}"
        _, secret = self.hub.registry.provision_device(device_id, target, {"site": name[-1]})
        directory = self.h.root / device_id
        directory.mkdir(parents=True)
        (directory / "root.json").write_bytes(self.hub.tuf.trusted_root())
        address = self.hub.broker_address
        agent = Agent(
            AgentConfig.model_validate(
                {
                    "device_id": device_id,
                    "target": target,
                    "broker_url": f"mqtt://{address.host}:{address.port}",
                    "password": secret,
                    "data_dir": directory / "data",
                    "trust_root": directory / "root.json",
                    "telemetry_interval_s": 3600,
                    "chunk_timeout_s": 1.0,
                    "download_timeout_s": 60,
                }
            )
        )
        agent.start()
        self.h.agents.append(agent)
        self.agents[device_id] = agent
        return agent

    def mixed(self, per_target: int) -> list[Agent]:
        return [self.device(f"{t.split('-')[0]}{i}", t) for t in TARGETS for i in range(per_target)]

    def start(self, plan: RolloutPlan, rollout_id: str) -> RolloutSnapshot:
        return self.rollouts.start_rollout(plan, rollout_id=rollout_id)

    def wait(self, rollout_id: str, *states: RolloutState) -> RolloutSnapshot:
        snapshot = self.rollouts.wait(rollout_id, lambda s: s.state in states, TIMEOUT_S)
        assert snapshot.state in states, f"{snapshot.state}: {snapshot.reason}"
        return snapshot

    def restart_hub(self) -> None:
        """Stop the hub and start a new one on the same data directory (and the same embedded broker port)."""
        old = self.hub
        port = old.broker_address.port
        old.stop()
        settings = HubSettings(
            data_dir=old.settings.data_dir,
            broker_url=self.broker_url,
            chunk_size=4096,
            rebroadcast_window_s=0.5,
            broker_port=port if self.broker_url is None else 0,
        )
        hub = Hub(settings)
        hub.start()
        self.h.hub = hub

    def versions(self) -> set[str | None]:
        """Active versions as the rollout engine saw them (the registry's copy may trail by a message)."""
        return {s.active_version for s in self.rollouts.statuses() if s.device_id in self.agents}


@pytest.fixture
def fleet(harness: Harness, broker_url: str | None) -> Iterator[MixedFleet]:
    yield MixedFleet(harness, broker_url)


def _plan(version: str, **options: object) -> RolloutPlan:
    defaults: dict[str, object] = {
        "canary": "2",
        "waves": "100",
        "gate": False,
        "min_devices": 1,
        "device_timeout_s": 60.0,
    }
    defaults.update(options)
    return plan_from_cli(f"digits:{version}", **defaults)  # type: ignore[arg-type]


def _on(agents: list[Agent], version: str) -> None:
    for agent in agents:
        assert agent.service.predict([[0.0] * 64])["version"] == version


def test_good_model_reaches_every_device_of_every_class(fleet: MixedFleet) -> None:
    fleet.publish("1.0.0")
    agents = fleet.mixed(2)
    fleet.start(_plan("1.0.0"), "ro-good")
    snapshot = fleet.wait("ro-good", RolloutState.COMPLETED, RolloutState.ABORTED, RolloutState.PAUSED)
    assert snapshot.state == RolloutState.COMPLETED
    canary = {r.device_class.split("/")[0] for r in snapshot.devices.values() if r.canary}
    assert canary == set(TARGETS)  # the canary represents every class
    assert fleet.versions() == {"1.0.0"}
    _on(agents, "1.0.0")
    # the broker sent each device its bundle from the chunks kept retained for the rollout: nobody asked
    assert [a.updater.downloader.requests_sent for a in agents] == [0] * len(agents)
    assert fleet.hub.rollouts is not None and fleet.hub.rollouts.store.retained() == {}  # cleared at the end


def test_self_test_failure_on_one_class_aborts_and_rolls_back(fleet: MixedFleet) -> None:
    fleet.publish("1.0.0")
    agents = fleet.mixed(2)
    assert set(fleet.h.deploy("1.0.0", agents, timeout_s=TIMEOUT_S).values()) == {"done"}
    fleet.publish("2.0.0", broken_on="jetson-orin")
    fleet.start(_plan("2.0.0", max_failures=0), "ro-bad")
    snapshot = fleet.wait("ro-bad", RolloutState.ABORTED, RolloutState.COMPLETED)
    assert snapshot.state == RolloutState.ABORTED
    failed = [r for r in snapshot.devices.values() if r.phase == "failed"]
    assert failed and all(r.target == "jetson-orin" for r in failed)
    assert any("self" in r.detail.lower() or "golden" in r.detail.lower() for r in failed), failed
    assert fleet.versions() == {"1.0.0"}
    # the rollout is a deployment too: per-device rows, updated by the hub's event handler
    rows = {r.device_id: r for r in fleet.hub.registry.deployment_devices("ro-bad")}
    # every device sent the version has a row; the other canary may still be mid-update at the abort
    assert set(rows) == {d for d, r in snapshot.devices.items() if r.phase in ENGAGED}
    fleet.hub.wait_deployment("ro-bad", TIMEOUT_S)
    rows = {r.device_id: r for r in fleet.hub.registry.deployment_devices("ro-bad")}
    assert {d for d, r in rows.items() if not r.ok and r.detail} == {r.device_id for r in failed}
    _on(agents, "1.0.0")


def test_hub_restart_mid_rollout_continues(fleet: MixedFleet) -> None:
    fleet.publish("1.0.0")
    agents = fleet.mixed(2)
    fleet.start(_plan("1.0.0", approval="after_canary"), "ro-restart")
    waiting = fleet.wait("ro-restart", RolloutState.AWAITING_APPROVAL)
    canary = {d for d, r in waiting.devices.items() if r.canary}
    fleet.restart_hub()
    store = RolloutStore(fleet.hub.registry.db)
    assert store.load("ro-restart").state == RolloutState.AWAITING_APPROVAL
    request_command(store, "ro-restart", "promote")  # what `edgefleet rollout promote` does
    fleet.rollouts.wake()
    snapshot = fleet.wait("ro-restart", RolloutState.COMPLETED, RolloutState.ABORTED, RolloutState.PAUSED)
    assert snapshot.state == RolloutState.COMPLETED
    assert {d for d, r in snapshot.devices.items() if r.canary} == canary
    deploys = [a for a in store.history("ro-restart") if a.kind == "deploy"]
    sent = [d for a in deploys for d in a.device_ids]
    assert len(sent) == len(set(sent)) == len(agents)  # each device was sent the version once
    _on(agents, "1.0.0")
