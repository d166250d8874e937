"""Telemetry arrives exactly once through a hub restart, on the embedded broker and on Mosquitto: agents keep
recording while the hub is down, and every request they counted is stored once when it is back."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon import Agent
from hub.app import Hub
from hub.config import HubSettings
from tests.integration.fleet_harness import new_agent
from tests.waiting import wait_until

OUTAGE_S = 5.0


def free_port() -> int:
    """A TCP port free now, so a restarted hub's embedded broker listens where the agents reconnect."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Traffic:
    """One thread per agent recording a request every few milliseconds, counting them."""

    def __init__(self, agents: list[Agent]) -> None:
        self.counts = {a.config.device_id: 0 for a in agents}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(a,), daemon=True) for a in agents]
        for thread in self._threads:
            thread.start()

    def _run(self, agent: Agent) -> None:
        while not self._stop.wait(0.01):  # pacing of the simulated requests, not synchronisation
            agent.collector.record("digits", "1.0.0", latency_ms=3.0, labels=["7"], confidences=[0.9])
            self.counts[agent.config.device_id] += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@pytest.fixture
def settings(tmp_path: Path, broker_url: str | None) -> HubSettings:
    return HubSettings(data_dir=tmp_path / "hub", broker_url=broker_url, broker_port=free_port())


@pytest.fixture
def agents(tmp_path: Path, settings: HubSettings) -> Iterator[tuple[list[Hub], list[Agent]]]:
    """A started hub (restarted ones are appended to the list) and three agents; all stopped afterwards."""
    hub = Hub(settings)
    hub.start()
    hubs = [hub]
    prefix = f"td-{uuid.uuid4().hex[:6]}"
    started: list[Agent] = []
    for n in range(3):
        agent = new_agent(hub, tmp_path, f"{prefix}-{n}", telemetry_interval_s=0.2, telemetry_ack_timeout_s=1.0)
        agent.start()
        started.append(agent)
    yield hubs, started
    for agent in started:
        agent.stop()
    for hub in hubs:
        hub.stop()


def test_hub_restart_under_traffic_loses_and_duplicates_nothing(
    settings: HubSettings, agents: tuple[list[Hub], list[Agent]]
) -> None:
    hubs, fleet = agents
    traffic = Traffic(fleet)
    try:
        first = hubs[0].ingestor
        assert first is not None and first.wait_stored(3, timeout_s=30)
        # the outage takes the last acknowledgements with it: batches stored but never acknowledged, so the
        # devices must send them again and the restarted hub must drop them as duplicates
        first._acknowledge = lambda _ack: None
        assert first.wait_stored(first.stored + 1, timeout_s=30)
        hubs[0].stop()
        threading.Event().wait(OUTAGE_S)  # the outage: agents keep recording and publishing meanwhile
        hub = Hub(settings)  # same data directory, database and broker port
        hubs.append(hub)
        hub.start()
        assert hub.ingestor is not None and hub.ingestor.wait_stored(3, timeout_s=30)
    finally:
        traffic.stop()
    for agent in fleet:
        agent.flush_telemetry()
    assert wait_until(lambda: all(len(a.outbox) == 0 for a in fleet), 60), [len(a.outbox) for a in fleet]
    assert hub.ingestor.wait_idle(30)
    stored = hub.registry.telemetry_batches("digits", "1.0.0")
    for agent in fleet:
        device_id = agent.config.device_id
        mine = [b for b in stored if b.device_id == device_id]
        assert sum(b.requests for b in mine) == traffic.counts[device_id]  # 0 lost, 0 stored twice
        assert len({b.batch_id for b in mine}) == len(mine)
    assert hub.ingestor.duplicates > 0  # the batches whose acknowledgement was lost came again, stored once
