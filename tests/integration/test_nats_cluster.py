"""The device protocol, unchanged, on a 3-node NATS cluster with MQTT: the hub on one node, devices on the
others (orders, metadata and chunks cross nodes); a node is killed mid-rollout (after the canary), its devices
fail over to a surviving node by themselves (``broker_failover_urls``) and the hub hears them there, the last wave
completes on the remaining two nodes and every device installs the version exactly once (retained orders and
states survive in JetStream replicated on every node)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon import Agent
from fleet.rollout import RolloutState
from fleet.rollout_plan import plan_from_cli
from fleet.wire.messages import UpdateEvent, UpdateState
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


def test_a_node_dies_mid_rollout_its_devices_move_and_the_rollout_finishes(
    tmp_path: Path, cluster: NatsCluster, trained: TrainedDigits
) -> None:
    h = Harness(start_hub(tmp_path, cluster.url(0)), tmp_path, trained)
    done: Counter[tuple[str, str]] = Counter()
    h.hub.on_update_event(lambda event: done.update([(event.device_id, event.deployment_id)]) if _done(event) else None)
    try:
        h.hub.publish(manifest_for(trained, "1.0.0"), trained.onnx_path, trained.golden_x, trained.golden_logits)
        agents = {a.config.device_id: a for a in (h.agent(f"d{i}", broker_url=cluster.url(1)) for i in range(4))}
        assert h.hub.rollouts is not None
        plan = plan_from_cli(
            "digits:1.0.0", canary="2", waves="100", gate=False, min_devices=1, approval="after_canary"
        )
        rollout_id = h.hub.rollouts.start_rollout(plan).rollout_id
        waiting = h.hub.rollouts.wait(rollout_id, lambda s: s.state == RolloutState.AWAITING_APPROVAL, TIMEOUT_S)
        assert waiting.state == RolloutState.AWAITING_APPROVAL
        # the engine may count a device done from its retained state before its event reaches this listener
        assert wait_until(lambda: len({d for d, _ in done}) == 2, TIMEOUT_S)
        canary = {d for d, _ in done}
        for device_id in canary:  # the canary devices now live on node 2 (hub on 0, the rest on 1)
            agents[device_id].stop()
            moved = {"broker_url": cluster.url(2), "broker_failover_urls": [cluster.url(1)]}
            agents[device_id] = h.agent_from(agents[device_id].config.model_copy(update=moved))

        assert h.hub.traffic is not None
        seen_after_move: set[str] = set()
        h.hub.traffic.on_state(lambda state: seen_after_move.add(state.device_id) if state.online else None)
        cluster.kill(2)  # node 2 dies mid-rollout, between the canary and the last wave
        # JetStream re-elects stream and consumer leaders; until then NATS refuses to take over a session and may
        # refuse a QoS 1 subscription in its SUBACK (the agents retry both; see docs/scale-out.md). Its devices
        # fail over to node 1 by themselves, same identity and data.
        node_1 = ("127.0.0.1", cluster.mqtt_ports[1])
        assert wait_until(lambda: all(_on(agents[d], node_1) for d in canary), TIMEOUT_S)
        assert wait_until(lambda: canary <= seen_after_move, TIMEOUT_S)  # and the hub hears them there
        h.hub.rollouts.command(rollout_id, "promote")  # the last wave downloads through a cluster short of a node
        final = h.hub.rollouts.wait(rollout_id, lambda s: s.final, TIMEOUT_S)
        assert final.state == RolloutState.COMPLETED

        states = h.hub.wait_deployment(rollout_id, TIMEOUT_S)
        assert states == dict.fromkeys(agents, "done")
        # the moved devices got their retained order again on the new node and did not install twice
        assert done == Counter({(d, rollout_id): 1 for d in agents})
        for agent in agents.values():
            assert agent.service.predict([[0.0] * 64])["version"] == "1.0.0"
    finally:
        h.close()


def _done(event: UpdateEvent) -> bool:
    return event.state == UpdateState.DONE


def _on(agent: Agent, node: tuple[str, int]) -> bool:
    """Whether the agent is connected, and to ``node``."""
    broker = agent.link.broker if agent.link is not None else None
    return broker is not None and broker.connected and broker.node == node
