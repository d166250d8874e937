"""Failover across the nodes of a broker cluster: a connection that loses its node moves to the next one, with its
subscriptions, on Mosquitto and on the embedded broker."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fleet.wire.mqtt import BrokerAddress, PahoBroker
from hub.devices.embedded_broker import EmbeddedBroker
from tests.integration.private_mosquitto import PrivateMosquitto
from tests.waiting import wait_until

#: a running node: its port and how to kill it
Node = tuple[int, Callable[[], None]]


@contextmanager
def two_nodes(kind: str, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    if kind == "mosquitto":
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        brokers = [PrivateMosquitto(tmp_path / name) for name in ("a", "b")]
        for broker in brokers:
            broker.start()
        try:
            yield (brokers[0].port, brokers[0].stop), (brokers[1].port, brokers[1].stop)
        finally:
            for broker in brokers:
                broker.stop()
        return
    embedded = [EmbeddedBroker("127.0.0.1"), EmbeddedBroker("127.0.0.1")]
    for node in embedded:
        node.start()
    try:
        yield (embedded[0].port, embedded[0].stop), (embedded[1].port, embedded[1].stop)
    finally:
        for node in embedded:
            node.stop()


@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
def test_a_lost_node_hands_the_connection_to_the_next_with_its_subscriptions(kind: str, tmp_path: Path) -> None:
    with two_nodes(kind, tmp_path) as ((port_a, kill_a), (port_b, _)):
        nodes = [("127.0.0.1", port_a), ("127.0.0.1", port_b)]
        client = PahoBroker(BrokerAddress("127.0.0.1", port_a), client_id=f"dev-{uuid.uuid4().hex[:6]}", failover=nodes)
        got = threading.Event()
        try:
            client.subscribe("edgefleet/v1/broadcast/x", lambda m: got.set() if m.payload == b"on b" else None)
            assert client.node == ("127.0.0.1", port_a)
            kill_a()
            assert wait_until(lambda: client.node == ("127.0.0.1", port_b), 30)  # noticed, aims at the next node
            assert client.wait_connected(30)
            assert client.node == ("127.0.0.1", port_b)
            assert client.wait_subscribed(30)
            other = PahoBroker(BrokerAddress("127.0.0.1", port_b), client_id=f"pub-{uuid.uuid4().hex[:6]}")
            try:
                other.publish("edgefleet/v1/broadcast/x", b"on b")
                assert got.wait(30)  # the subscription came along to the new node
            finally:
                other.close()
        finally:
            client.close()


def test_without_failover_nodes_a_connection_stays_on_its_node() -> None:
    client = PahoBroker(BrokerAddress("127.0.0.1", 9), wait_connected=False, reconnect_max_delay_s=1)
    try:
        client._handle_disconnect(None, None, None, "lost", None)
        assert client.node == ("127.0.0.1", 9)
    finally:
        client.close()
