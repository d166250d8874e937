"""The NATS authorization rendered from `fleet.wire.acl` (hub/devices/nats_permissions.py), on a real NATS server
with MQTT: a device gets its retained order and the bundle broadcast at QoS 1 and reports its state, but cannot
report for another device, read another device's order, or read the consumers' delivery subjects."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from fleet.wire.acl import HUB_USERNAME, Rule, device_rules, hub_rules
from hub.devices.nats_permissions import mqtt_subject, nats_user, render_authorization
from tests.integration.nats_cluster import NATS_SERVER, NatsCluster

WAIT_S = 15.0
PASSWORDS = {HUB_USERNAME: "hub-secret", "cam-1": "cam-1-secret"}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NatsCluster]:
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip("nats-server is not installed (.ci/run installs the Debian package nats-server)")
    users = [
        nats_user(HUB_USERNAME, PASSWORDS[HUB_USERNAME], hub_rules()),
        nats_user("cam-1", PASSWORDS["cam-1"], device_rules("cam-1")),
        nats_user("probe", "-", [Rule("read", "edgefleet/v1/probe")]),  # the readiness check's anonymous login
    ]
    server = NatsCluster(tmp_path, size=1, server=render_authorization(users) + "no_auth_user: probe\n")
    try:
        server.start()
        yield server
    finally:
        server.stop()


class Client:
    """A paho client that queues what it receives and reports each SUBACK."""

    def __init__(self, node: NatsCluster, user: str) -> None:
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subacks: queue.Queue[bool] = queue.Queue()
        connected = threading.Event()
        self.paho = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-test")
        self.paho.username_pw_set(user, PASSWORDS[user])
        self.paho.on_connect = lambda *_: connected.set()
        self.paho.on_message = lambda _c, _u, m: self.received.put((m.topic, m.payload))
        self.paho.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(not codes[0].is_failure)
        self.paho.connect("127.0.0.1", node.mqtt_ports[0])
        self.paho.loop_start()
        assert connected.wait(WAIT_S)

    def subscribe(self, topic: str) -> bool:
        self.paho.subscribe(topic, qos=1)
        return self.subacks.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.paho.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def next(self) -> tuple[str, bytes]:
        return self.received.get(timeout=WAIT_S)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


def test_topics_map_to_subjects() -> None:
    assert mqtt_subject("edgefleet/v1/devices/+/state") == "edgefleet.v1.devices.*.state"
    assert mqtt_subject("edgefleet/v1/bundles/#") == "edgefleet.v1.bundles.>"


def test_a_device_reaches_its_own_topics_only(node: NatsCluster) -> None:
    hub, device = Client(node, HUB_USERNAME), Client(node, "cam-1")
    try:
        assert hub.subscribe("edgefleet/v1/devices/+/state")
        hub.publish("edgefleet/v1/devices/cam-1/deployment", b"order for cam-1", retain=True)
        hub.publish("edgefleet/v1/devices/cam-2/deployment", b"order for cam-2", retain=True)
        assert device.subscribe("edgefleet/v1/devices/cam-1/deployment")  # QoS 1: a JetStream consumer
        assert device.next() == ("edgefleet/v1/devices/cam-1/deployment", b"order for cam-1")  # retained
        assert device.subscribe("edgefleet/v1/bundles/#")
        for stolen in ("edgefleet/v1/devices/cam-2/deployment", "#", "$MQTT/sub/#"):
            device.subscribe(stolen)  # refused in its SUBACK or never delivered: the marker below comes first
        hub.publish("edgefleet/v1/bundles/abc", b"chunk")
        assert device.next() == ("edgefleet/v1/bundles/abc", b"chunk")

        device.publish("edgefleet/v1/devices/cam-2/state", b"spoofed")  # refused by the server
        device.publish("edgefleet/v1/devices/cam-1/state", b"its own state", retain=True)
        assert hub.next() == ("edgefleet/v1/devices/cam-1/state", b"its own state")
        hub.publish("edgefleet/v1/devices/cam-2/deployment", b"another order for cam-2")
        hub.publish("edgefleet/v1/devices/cam-1/deployment", b"marker")
        assert device.next() == ("edgefleet/v1/devices/cam-1/deployment", b"marker")
        assert device.received.empty() and hub.received.empty()
    finally:
        hub.close()
        device.close()
