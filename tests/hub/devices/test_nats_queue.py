"""`NatsQueueGroups` on a real NATS server with MQTT: devices' MQTT publishes reach one member of a queue group,
plain filters and publishes stay on MQTT, and the topic <-> subject mapping matches what NATS does."""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from fleet.wire import topics
from fleet.wire.mqtt import BrokerAddress, BrokerConnectionError, PahoBroker
from fleet.wire.transport import InMemoryBroker, Message
from hub.devices.nats_queue import NatsQueueGroups, mqtt_filter_to_subject, split_shared, subject_to_mqtt_topic
from tests.integration.nats_cluster import NATS_SERVER, NatsCluster
from tests.waiting import wait_until


def test_shared_filters_split_into_group_and_filter() -> None:
    assert split_shared("$share/edgefleet-hub/edgefleet/v1/devices/+/state") == (
        "edgefleet-hub",
        "edgefleet/v1/devices/+/state",
    )
    assert split_shared("edgefleet/v1/devices/+/state") == (None, "edgefleet/v1/devices/+/state")
    with pytest.raises(ValueError, match="expected \\$share/GROUP/filter"):
        split_shared("$share/only-group")


def test_topics_map_to_subjects_as_nats_maps_them() -> None:
    assert mqtt_filter_to_subject("edgefleet/v1/devices/+/telemetry") == "edgefleet.v1.devices.*.telemetry"
    assert mqtt_filter_to_subject("edgefleet/v1/#") == "edgefleet.v1.>"
    assert mqtt_filter_to_subject("edgefleet/v1/devices/cam.7/state") == "edgefleet.v1.devices.cam//7.state"
    assert subject_to_mqtt_topic("edgefleet.v1.devices.cam//7.state") == "edgefleet/v1/devices/cam.7/state"
    with pytest.raises(ValueError, match="empty level"):
        mqtt_filter_to_subject("edgefleet//devices")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip("nats-server is not installed (.ci/run installs the Debian package nats-server)")
    nodes = NatsCluster(tmp_path_factory.mktemp("nats"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


_PROBE_DEVICE = "dev-probe"


def _mqtt(cluster: NatsCluster, node: int) -> PahoBroker:
    port = cluster.mqtt_ports[node]
    return PahoBroker(BrokerAddress("127.0.0.1", port), client_id=f"t{uuid.uuid4().hex[:8]}")


def test_each_device_message_reaches_one_member_of_the_group(cluster: NatsCluster) -> None:
    group = f"g{uuid.uuid4().hex[:6]}"
    shared = f"$share/{group}/{topics.device_wildcard('telemetry')}"
    received: dict[str, list[Message]] = {"a": [], "b": []}
    lock = threading.Lock()
    members = [NatsQueueGroups(_mqtt(cluster, 0), [cluster.nats_url(n)], name=n_) for n, n_ in ((0, "a"), (1, "b"))]
    device = _mqtt(cluster, 2)  # devices on another node than either member
    try:
        for member in members:

            def keep(message: Message, name: str = member.name) -> None:
                with lock:
                    received[name].append(message)

            member.subscribe(shared, keep)
        _wait_for_interest_on_the_device_node(device, received, lock)
        for index in range(200):
            device.publish(topics.device_topic(f"dev-{index % 4}", "telemetry"), f"{index}".encode(), qos=1)

        def counted(name: str) -> list[Message]:
            with lock:
                return [m for m in received[name] if m.payload != b"probe"]

        assert wait_until(lambda: len(counted("a")) + len(counted("b")) == 200, 30.0)
        payloads = Counter(m.payload for name in received for m in counted(name))
        assert payloads == Counter(f"{i}".encode() for i in range(200))  # each message once, to one member
        assert counted("a") and counted("b")  # and both members got a share
        assert {m.topic for m in counted("a") + counted("b")} == {
            topics.device_topic(f"dev-{i}", "telemetry") for i in range(4)
        }
    finally:
        device.close()
        for member in members:
            member.close()
            member.mqtt.close()


def _wait_for_interest_on_the_device_node(
    device: PahoBroker, received: dict[str, list[Message]], lock: threading.Lock
) -> None:
    """Publish probes until both members got one. A queue subscription reaches the other nodes over the routes
    after its own node confirmed it, and NATS drops a message published where no interest is known yet (at most
    once), so the counted messages start only once every member is known on the device's node."""
    probe = topics.device_topic(_PROBE_DEVICE, "telemetry")

    def both_probed() -> bool:
        device.publish(probe, b"probe", qos=1)
        with lock:
            return all(any(m.topic == probe for m in got) for got in received.values())

    assert wait_until(both_probed, 30.0)


def test_plain_filters_and_publishes_stay_on_mqtt_with_retained_messages(cluster: NatsCluster) -> None:
    topic = topics.device_topic(f"dev-{uuid.uuid4().hex[:6]}", "state")
    shared = NatsQueueGroups(_mqtt(cluster, 0), [cluster.nats_url(0)], name="plain")
    got = threading.Event()
    try:
        shared.publish(topic, b"retained", retain=True)  # through MQTT: NATS keeps it for later subscribers
        shared.subscribe(topic, lambda m: got.set() if m.payload == b"retained" and m.retain else None)
        assert got.wait(30.0)
    finally:
        shared.close()
        shared.mqtt.close()


def test_raw_sinks_get_messages_on_the_nats_thread(cluster: NatsCluster) -> None:
    shared = NatsQueueGroups(_mqtt(cluster, 0), [cluster.nats_url(1)], name="raw")
    device = _mqtt(cluster, 1)
    seen: list[tuple[str, bytes]] = []
    try:
        sink = lambda m: seen.append((threading.current_thread().name, m.payload))  # noqa: E731
        shared.subscribe_raw(f"$share/raw/{topics.device_wildcard('telemetry')}", sink)
        device.publish(topics.device_topic("dev-raw", "telemetry"), b"{}", qos=1)
        assert wait_until(lambda: seen == [("nats-raw", b"{}")], 30.0)
    finally:
        device.close()
        shared.close()
        shared.mqtt.close()


def test_an_unreachable_nats_is_one_clear_error() -> None:
    reason = r"cannot connect to NATS at nats://127\.0\.0\.1:1: .*Connect call failed"
    with pytest.raises(BrokerConnectionError, match=reason):
        NatsQueueGroups(InMemoryBroker(), ["nats://127.0.0.1:1"], name="nowhere", connect_timeout_s=3.0)
