"""The device protocol, unchanged, on a 3-node NATS cluster with MQTT: the hub on one node, devices on two
others; the node of half the devices is killed mid-rollout, they reconnect to the surviving node and every
device installs the version exactly once (retained orders and states survive in replicated JetStream)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.daemon import Agent
from fleet.rollout import RolloutState
from fleet.rollout_plan import plan_from_cli
from fleet.wire.messages import UpdateEvent, UpdateState
from fleet.wire.mqtt import BrokerConnectionError
from hub.demo.model import TrainedDigits
from tests.integration.fleet_harness import Harness, manifest_for, start_hub
from tests.integration.nats_cluster import NATS_SERVER, NatsCluster
from tests.waiting import wait_until

TIMEOUT_S = 90.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip("nats-server is not installed (.ci/run installs the Debian package nats-server)")
    nodes = NatsCluster(tmp_path)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def test_devices_move_to_a_surviving_node_mid_rollout_and_finish(
    tmp_path: Path, cluster: NatsCluster, trained: TrainedDigits
) -> None:
    h = Harness(start_hub(tmp_path, cluster.url(0)), tmp_path, trained)
    done: Counter[tuple[str, str]] = Counter()
    h.hub.on_update_event(lambda event: done.update([(event.device_id, event.deployment_id)]) if _done(event) else None)
    try:
        h.hub.publish(manifest_for(trained, "1.0.0"), trained.onnx_path, trained.golden_x, trained.golden_logits)
        staying = [h.agent(f"n1-{i}", broker_url=cluster.url(1)) for i in range(2)]
        moving = [h.agent(f"n2-{i}", broker_url=cluster.url(2)) for i in range(2)]
        assert h.hub.rollouts is not None
        plan = plan_from_cli(
            "digits:1.0.0", canary="2", waves="100", gate=False, min_devices=1, approval="after_canary"
        )
        rollout_id = h.hub.rollouts.start_rollout(plan).rollout_id
        waiting = h.hub.rollouts.wait(rollout_id, lambda s: s.state == RolloutState.AWAITING_APPROVAL, TIMEOUT_S)
        assert waiting.state == RolloutState.AWAITING_APPROVAL

        cluster.kill(2)  # the node of two devices dies mid-rollout
        # JetStream re-elects stream and consumer leaders first: until then NATS refuses to take over a session
        # and may refuse a QoS 1 subscription in its SUBACK, which the agent does not check (docs/scale-out.md)
        assert wait_until(lambda: cluster.healthy(1) and all(cluster.grants_qos1(1) for _ in range(3)), TIMEOUT_S)
        moved: list[Agent] = []
        for agent in moving:  # each device comes back through a surviving node, same identity and data
            agent.stop()
            moved.append(_restart_on(h, agent.config.model_copy(update={"broker_url": cluster.url(1)})))
        h.hub.rollouts.command(rollout_id, "promote")
        final = h.hub.rollouts.wait(rollout_id, lambda s: s.final, TIMEOUT_S)
        assert final.state == RolloutState.COMPLETED

        devices = [a.config.device_id for a in staying + moved]
        states = h.hub.wait_deployment(rollout_id, TIMEOUT_S)
        assert states == dict.fromkeys(devices, "done")
        assert done == Counter({(d, rollout_id): 1 for d in devices})  # nobody installed twice
        for agent in staying + moved:
            assert agent.service.predict([[0.0] * 64])["version"] == "1.0.0"
    finally:
        h.close()


def _restart_on(h: Harness, config: AgentConfig) -> Agent:
    """Start the device's agent again, retrying as a supervisor would: for a few seconds after a node's loss,
    NATS refuses to take over the device's MQTT session while JetStream elects new leaders for its streams."""
    started: list[Agent] = []

    def attempt() -> bool:
        agent = Agent(config)
        try:
            agent.start(connect_timeout_s=5.0)
        except BrokerConnectionError:
            return False
        started.append(agent)
        return True

    assert wait_until(attempt, TIMEOUT_S), f"{config.device_id} could not reconnect"
    h.agents.append(started[0])
    return started[0]


def _done(event: UpdateEvent) -> bool:
    return event.state == UpdateState.DONE
