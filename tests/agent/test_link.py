"""`BrokerLink` on a real Mosquitto that a test starts late, kills and restarts."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.link import BrokerLink
from fleet.wire.backoff import Backoff
from fleet.wire.mqtt import BrokerAddress, BrokerConnectionError, PahoBroker
from fleet.wire.transport import Message
from tests.integration.private_mosquitto import PrivateMosquitto
from tests.waiting import wait_until


class Online:
    """Counts ``on_online`` calls and lets a test wait for the n-th."""

    def __init__(self) -> None:
        self.calls = 0
        self._changed = threading.Condition()

    def __call__(self) -> None:
        with self._changed:
            self.calls += 1
            self._changed.notify_all()

    def wait(self, calls: int, timeout_s: float = 30) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.calls >= calls, timeout_s)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    mosquitto = PrivateMosquitto(tmp_path)  # not started: each test decides when the broker appears
    yield mosquitto
    mosquitto.stop()


def _link(broker: PrivateMosquitto, online: Callable[[], None]) -> BrokerLink:
    address = BrokerAddress(port=broker.port)

    def connect(on_ready: Callable[[], None]) -> PahoBroker:
        return PahoBroker(address, client_id="dev-link", on_connect=on_ready, connect_timeout_s=0.3)

    return BrokerLink(
        connect, on_online=online, backoff=Backoff(0.05, 0.2), attempt_timeout_s=0.3, where=f"127.0.0.1:{broker.port}"
    )


def test_started_without_a_broker_it_retries_then_connects_with_early_subscriptions(
    broker: PrivateMosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    online = Online()
    link = _link(broker, online)
    received: queue.Queue[Message] = queue.Queue()
    link.subscribe("dev/in/#", received.put)
    link.start()
    try:
        assert wait_until(lambda: link.attempts >= 3, 10)  # retrying, never giving up
        assert not link.connected and online.calls == 0
        assert "Connection refused; next attempt in" in caplog.text  # each failure says why, once
        with pytest.raises(BrokerConnectionError, match="not connected to the broker"):
            link.publish("dev/out", b"x")
        assert not link.publish_and_wait("dev/out", b"x", timeout_s=0.1)
        broker.start()
        assert link.wait_connected(10) and online.wait(1)
        sender = PahoBroker(BrokerAddress(port=broker.port))
        try:
            # retained, as orders are: the link's SUBSCRIBE and this publish race on separate connections
            assert sender.publish_and_wait("dev/in/order", b"hello", retain=True, timeout_s=5)
            assert received.get(timeout=10).payload == b"hello"  # the subscription made while offline
        finally:
            sender.close()
        assert link.publish_and_wait("dev/out", b"state", timeout_s=5)
    finally:
        link.close()


def test_after_the_first_connection_reconnects_announce_again(broker: PrivateMosquitto) -> None:
    broker.start()
    online = Online()
    link = _link(broker, online)
    link.start()
    try:
        assert online.wait(1)
        broker.stop()
        assert wait_until(lambda: not link.connected, 10)
        broker.start()
        assert online.wait(2)  # paho reconnected on its own; the link said so once more
        assert link.connected and link.attempts == 1
    finally:
        link.close()


def test_close_while_retrying_stops_at_once(broker: PrivateMosquitto) -> None:
    link = _link(broker, Online())
    link.start()
    assert wait_until(lambda: link.attempts >= 2, 10)
    start = time.monotonic()
    link.close()
    assert time.monotonic() - start < 3
    attempts = link.attempts
    assert not link.wait_connected(0.5) and link.attempts == attempts
