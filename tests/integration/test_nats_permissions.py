"""The NATS authorization rendered from `fleet.wire.acl` (hub/devices/nats_permissions.py), on a real NATS server
with MQTT: a device gets its retained order and the bundle broadcast at QoS 1 and reports its state, but cannot
report for another device, read another device's order, or read the consumers' delivery subjects."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.wire.acl import HUB_USERNAME, Rule, device_rules, hub_rules
from hub.devices.nats_permissions import nats_user, render_authorization
from hub.devices.nats_queue import mqtt_filter_to_subject
from tests.integration.nats_cluster import NATS_SERVER, NatsCluster
from tests.integration.probe_client import ProbeClient

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


def _login(node: NatsCluster, user: str) -> ProbeClient:
    """A client logged in as ``user``."""
    client = ProbeClient(node.mqtt_ports[0], client_id=f"{user}-test", user=user, password=PASSWORDS[user])
    assert client.accepted()
    return client


def test_topics_map_to_subjects() -> None:
    assert mqtt_filter_to_subject("edgefleet/v1/devices/+/state") == "edgefleet.v1.devices.*.state"
    assert mqtt_filter_to_subject("edgefleet/v1/bundles/#") == "edgefleet.v1.bundles.>"


def test_a_device_reaches_its_own_topics_only(node: NatsCluster) -> None:
    hub, device = _login(node, HUB_USERNAME), _login(node, "cam-1")
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
