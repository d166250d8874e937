"""Reconnecting: each wait is drawn from the jittered backoff (a fleet does not come back in lockstep after a
broker restart), and a login refused on a reconnect is retried until the broker accepts it again."""

from __future__ import annotations

import threading

from fleet.wire.mqtt import BrokerAddress, PahoBroker
from hub.devices.embedded_broker import EmbeddedBroker


def test_each_reconnect_wait_is_drawn_from_the_jittered_backoff() -> None:
    broker = PahoBroker(BrokerAddress("127.0.0.1", 9), wait_connected=False, reconnect_max_delay_s=8)
    try:
        delays = []
        for _ in range(8):
            broker._handle_disconnect(None, None, None, "lost", None)
            delays.append(float(broker._client._reconnect_min_delay))
        assert all(0.5 <= d <= 8.0 for d in delays)  # within [ceiling/2, ceiling], the ceiling capped at 8 s
        assert len(set(delays)) == len(delays)  # drawn each time, not paho's fixed doubling
    finally:
        broker.close()


def test_a_login_refused_on_reconnect_is_retried_until_accepted() -> None:
    accept = threading.Event()
    accept.set()
    refused = threading.Event()

    def check(user: str, password: str, _address: str) -> bool:
        if not accept.is_set():
            refused.set()
        return accept.is_set() and (user, password) == ("cam-1", "secret")

    first = EmbeddedBroker("127.0.0.1", check=check)
    first.start()
    client = PahoBroker(BrokerAddress("127.0.0.1", first.port, "cam-1", "secret"), client_id="cam-1")
    try:
        accept.clear()  # e.g. the hub backs off this login while the broker restarts
        first.stop()
        second = EmbeddedBroker("127.0.0.1", first.port, check=check)
        second.start()
        try:
            assert refused.wait(30)  # the device came back and was refused
            accept.set()
            assert client.wait_connected(30)  # and keeps trying on its own until let in
        finally:
            second.stop()
    finally:
        client.close()
