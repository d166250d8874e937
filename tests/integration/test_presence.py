"""Online status after a hub restart, on the embedded broker and on Mosquitto: an agent that died while the
hub was down is listed offline within the bound, one that is alive stays online."""

from __future__ import annotations

import uuid
from pathlib import Path

import agent.daemon as agent_daemon
from agent.daemon import Agent
from hub.app import Hub
from hub.config import HubSettings
from tests.integration.fleet_harness import new_agent
from tests.integration.test_telemetry_delivery import free_port
from tests.waiting import wait_until

OFFLINE_AFTER_S = 2.0


def _kill(agent: Agent) -> None:
    """Stop the agent's threads and link without any goodbye: no offline state, no flush."""
    agent._stopping.set()
    agent._orders.put(agent_daemon._STOP)
    for thread in agent._threads:
        thread.join(timeout=10)
    assert agent.broker is not None
    agent.broker.close()


def test_an_agent_killed_while_the_hub_is_down_shows_offline_after_the_restart(
    tmp_path: Path, broker_url: str | None
) -> None:
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        broker_url=broker_url,
        broker_port=free_port(),
        device_offline_after_s=OFFLINE_AFTER_S,
    )
    hub = Hub(settings)
    hub.start()
    prefix = f"pr-{uuid.uuid4().hex[:6]}"
    beating = {"telemetry_interval_s": 0.2, "heartbeat_interval_s": 0.3}
    alive = new_agent(hub, tmp_path, f"{prefix}-alive", **beating)
    dead = new_agent(hub, tmp_path, f"{prefix}-dead", **beating)
    hubs = [hub]
    try:
        for agent in (alive, dead):
            agent.start()
        ids = [a.config.device_id for a in (alive, dead)]
        assert wait_until(lambda: all(hub.registry.get_device(d).online for d in ids), 30)
        hub.stop()
        _kill(dead)
        hub = Hub(settings)
        hubs.append(hub)
        hub.start()
        dead_id, alive_id = dead.config.device_id, alive.config.device_id
        online = lambda device_id: hub.registry.get_device(device_id).online  # noqa: E731
        assert wait_until(lambda: online(alive_id), 30)  # reconnected (embedded broker) and beating
        assert wait_until(lambda: not online(dead_id), OFFLINE_AFTER_S * 2 + 5)
        presence = hub.presence
        assert presence is not None  # sweeps spanning more than the bound: a retained state replayed is undone
        assert presence.wait_sweeps(int(OFFLINE_AFTER_S / presence.interval_s) + 2, timeout_s=15)
        assert online(alive_id) and not online(dead_id)
    finally:
        alive.stop()
        for h in hubs:
            h.stop()
