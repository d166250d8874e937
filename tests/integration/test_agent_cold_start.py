"""A device that boots while its broker is down serves its installed model at once, keeps trying to connect,
and once the broker and hub are back gets online, delivers what it recorded offline and takes a deployment."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.config import AgentConfig
from agent.daemon import Agent
from fleet.wire.messages import UpdateState
from hub.demo.model import TrainedDigits
from tests.integration.fleet_harness import Harness, start_hub
from tests.integration.private_mosquitto import PrivateMosquitto
from tests.waiting import wait_until

FAST_RETRY = {"reconnect_initial_s": 0.2, "reconnect_max_s": 1.0, "connect_timeout_s": 1.0}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def offline_device(tmp_path: Path, trained: TrainedDigits) -> Iterator[tuple[Harness, PrivateMosquitto, AgentConfig]]:
    """A device with digits 1.0.0 installed, then its hub and broker stopped."""
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    harness = Harness(start_hub(tmp_path, broker.url), tmp_path, trained)
    try:
        harness.publish("1.0.0")
        first = harness.agent("cold")
        assert set(harness.deploy("1.0.0", [first]).values()) == {"done"}
        harness.agents.remove(first)
        first.stop()
        device_id = first.config.device_id
        # so that "online" later can only come from the restarted agent
        assert wait_until(lambda: not harness.hub.registry.get_device(device_id).online, 30)
        harness.hub.stop()
        broker.stop()
        yield harness, broker, first.config.model_copy(update={"http_port": 0, **FAST_RETRY})
    finally:
        harness.close()
        broker.stop()


def _bring_back(harness: Harness, broker: PrivateMosquitto, tmp_path: Path) -> None:
    broker.start()
    harness.hub = start_hub(tmp_path, broker.url)  # same data directory: same registry, keys and devices


def test_agent_serves_at_once_without_a_broker_and_takes_a_deployment_once_it_is_back(
    offline_device: tuple[Harness, PrivateMosquitto, AgentConfig], tmp_path: Path
) -> None:
    harness, broker, config = offline_device
    agent = Agent(config)
    harness.agents.append(agent)
    started = time.monotonic()
    assert agent.start(online_timeout_s=0) is False
    assert agent.api is not None
    x = harness.trained.test_x
    answer = httpx.post(f"{agent.api.url}/v1/predict", json={"inputs": x[:3].tolist()}, timeout=5)
    assert answer.status_code == 200 and answer.json()["version"] == "1.0.0"
    assert time.monotonic() - started < 5  # the model and the API did not wait for the broker
    assert agent.link is not None and wait_until(lambda: agent.link.attempts >= 3, 20)  # retrying, not exiting
    assert agent.flush_telemetry() == 0 and len(agent.outbox) == 1  # recorded offline, kept

    _bring_back(harness, broker, tmp_path)
    device_id = config.device_id
    assert agent.link.wait_connected(30)
    assert wait_until(lambda: harness.hub.registry.get_device(device_id).online, 30)  # announced itself
    agent.flush_telemetry()  # (the reconnect may already have resent it)
    assert harness.hub.ingestor is not None and harness.hub.ingestor.wait_stored(1, timeout_s=30)
    assert wait_until(lambda: len(agent.outbox) == 0, 30)  # deleted once the hub acknowledged it
    assert harness.hub.registry.telemetry_batches("digits", "1.0.0")[0].device_id == device_id
    harness.publish("1.1.0")
    deployment = harness.hub.deploy("digits", "1.1.0", [device_id])
    assert agent.wait_for_deployment(deployment.id, 60) == UpdateState.DONE, harness.detail(agent)
    assert agent.service.predict(x[:1].tolist())["version"] == "1.1.0"


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_agent_process_keeps_running_offline_and_gets_online_later(
    offline_device: tuple[Harness, PrivateMosquitto, AgentConfig], tmp_path: Path
) -> None:
    harness, broker, config = offline_device
    toml = tmp_path / "agent.toml"
    toml.write_text(
        "\n".join(
            [
                f'device_id = "{config.device_id}"',
                f'target = "{config.target}"',
                f'broker_url = "{config.broker_url}"',
                f'password = "{config.password}"',
                f'data_dir = "{config.data_dir}"',
                f'trust_root = "{config.trust_root}"',
                "http_port = 0",
                *(f"{key} = {value}" for key, value in FAST_RETRY.items()),
            ]
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "agent.cli", "run", "--config", str(toml)]
    log = tmp_path / "agent.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    try:
        lines = _lines(process)
        url = ""
        while not url:
            line = lines.get(timeout=30)
            if line.startswith("local inference API on "):
                url = line.split(" on ", 1)[1].strip()
        answer = httpx.post(f"{url}/v1/predict", json={"inputs": harness.trained.test_x[:1].tolist()}, timeout=5)
        assert answer.status_code == 200 and answer.json()["version"] == "1.0.0"
        _bring_back(harness, broker, tmp_path)
        assert wait_until(lambda: harness.hub.registry.get_device(config.device_id).online, 30), log.read_text()
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert wait_until(lambda: not harness.hub.registry.get_device(config.device_id).online, 30), log.read_text()
