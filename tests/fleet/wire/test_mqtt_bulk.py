"""`BulkSubscriber`: frames parsed in bulk (split anywhere, malformed ones refused); messages delivered and
acknowledged, and QoS 0 replies sent, on Mosquitto and on the embedded broker (a ``$share`` filter on
Mosquitto); a reconnect with resubscription after the broker drops the connection; a refused login or
subscription, or a malformed frame from a broker, handled with one clear line."""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from fleet.wire.acl import HUB_USERNAME
from fleet.wire.mqtt import BrokerAddress, BrokerConnectionError, PahoBroker
from fleet.wire.mqtt_bulk import BulkSubscriber, parse_frames
from fleet.wire.topics import device_topic
from fleet.wire.transport import Message
from hub.devices.embedded_broker import EmbeddedBroker
from tests.waiting import wait_until

PASSWORDS = {HUB_USERNAME: "hub-secret", "cam-1": "cam-secret"}
WAIT_S = 10.0


def publish_frame(topic: str, payload: bytes, packet_id: int | None = 1) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic.encode()
    body += packet_id.to_bytes(2, "big") if packet_id is not None else b""
    body += payload
    first = 0x32 if packet_id is not None else 0x30
    length, encoded = len(body), bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            break
    return bytes([first]) + bytes(encoded) + body


def test_whole_frames_are_parsed_and_the_rest_kept_for_the_next_read() -> None:
    stream = publish_frame("a/b", b"x" * 300, 7) + publish_frame("c", b"", None) + b"\xd0\x00"
    cut = len(stream) - 1  # inside the PINGRESP
    found = parse_frames(stream[:cut])
    assert [(m.topic, len(m.payload), m.qos) for m in found.messages] == [("a/b", 300, 1), ("c", 0, 0)]
    assert bytes(found.acks) == b"\x40\x02\x00\x07"  # only the QoS 1 message is owed a PUBACK
    rest = parse_frames(stream[found.consumed :])
    assert rest.control == [(13, b"")] and rest.error is None  # the PINGRESP, once whole
    for split in range(1, len(stream)):  # a read may end anywhere, even inside the remaining length
        first = parse_frames(stream[:split])
        second = parse_frames(stream[:split][first.consumed :] + stream[split:])
        assert len(first.messages) + len(second.messages) == 2


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x32\xff\xff\xff\xff\x01", "remaining length"),
        (b"\x36\x04\x00\x01a\x00", "QoS 3"),
        (b"\x32\x06\x00\x02\xff\xfe\x00\x01", "UTF-8"),
        (b"\x32\x03\x00\x09a", "PUBLISH"),
        (b"\x80\x00", "packet type 8"),
    ],
)
def test_a_malformed_frame_stops_the_parse_after_the_good_ones(frame: bytes, reason: str) -> None:
    found = parse_frames(publish_frame("ok", b"1") + frame)
    assert [m.topic for m in found.messages] == ["ok"]
    assert found.error is not None and reason in str(found.error)


# -- on real brokers ----------------------------------------------------------------------------------------


@pytest.fixture(params=["embedded", "mosquitto"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerAddress]:
    """A broker where the hub user reads device telemetry (the embedded one checks logins and ACLs)."""
    if request.param == "mosquitto":
        yield BrokerAddress("127.0.0.1", 1883)
        return
    embedded = EmbeddedBroker("127.0.0.1", check=lambda user, password, _address: PASSWORDS.get(user) == password)
    embedded.start()
    yield BrokerAddress("127.0.0.1", embedded.port, HUB_USERNAME, PASSWORDS[HUB_USERNAME])
    embedded.stop()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.changed = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self.changed:
            self.messages.append(message)
            self.changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.messages) >= count, WAIT_S)


def _device(address: BrokerAddress) -> tuple[PahoBroker, str]:
    """A device connection and its telemetry topic (unique on the shared Mosquitto)."""
    if address.username is None:
        return PahoBroker(address), device_topic(f"cam-{uuid.uuid4().hex[:8]}", "telemetry")
    return PahoBroker(address.with_credentials("cam-1", PASSWORDS["cam-1"]), client_id="cam-1"), device_topic(
        "cam-1", "telemetry"
    )


def _hub_id() -> str:
    return f"edgefleet-test-{uuid.uuid4().hex[:6]}"


def test_messages_are_delivered_and_acknowledged(broker: BrokerAddress) -> None:
    inbox = Inbox()
    device, topic = _device(broker)
    subscriber = BulkSubscriber(broker, client_id=_hub_id())
    unsubscribe = subscriber.subscribe_raw(topic.replace("/telemetry", "/+"), inbox)
    try:
        for i in range(200):
            device.publish(topic, i.to_bytes(2, "big") * 2000, qos=1)
        assert device.publish_and_wait(topic, b"last", timeout_s=WAIT_S)
        assert inbox.wait_for(201)
        assert [int.from_bytes(m.payload[:2], "big") for m in inbox.messages[:200]] == list(range(200))
        assert {(m.topic, m.qos) for m in inbox.messages} == {(topic, 1)}
        acks = Inbox()
        device.subscribe(topic + "-ack", acks)
        assert device.wait_subscribed(WAIT_S)
        for i in range(100):  # replies queue and go out together
            subscriber.publish(topic + "-ack", b"ack-%d" % i)
        assert acks.wait_for(100)
        assert [m.payload for m in acks.messages] == [b"ack-%d" % i for i in range(100)]
    finally:
        device.close()
        unsubscribe()
    assert not subscriber.connected


def test_several_filters_on_one_connection_keep_the_brokers_order(broker: BrokerAddress) -> None:
    inbox = Inbox()
    device, topic = _device(broker)
    state, events = topic.replace("/telemetry", "/state"), topic.replace("/telemetry", "/events")
    subscriber = BulkSubscriber(broker, client_id=_hub_id())
    unsubscribe = subscriber.subscribe_raw_all({state: 1, events: 0}, inbox)
    try:
        for i in range(20):
            device.publish(events if i % 2 else state, b"%d" % i, qos=1)
        assert inbox.wait_for(20)
        assert [(m.topic, m.payload) for m in inbox.messages] == [
            (events if i % 2 else state, b"%d" % i) for i in range(20)
        ]
        assert {m.qos for m in inbox.messages if m.topic == events} == {0}  # granted as asked
    finally:
        device.close()
        unsubscribe()


def test_replies_queued_before_close_are_sent() -> None:
    """On Mosquitto only: amqtt (the embedded broker) drops a closing client's last messages whatever it does,
    and a hub on the embedded broker stops that broker with itself anyway."""
    broker = BrokerAddress("127.0.0.1", 1883)
    device, topic = _device(broker)
    subscriber = BulkSubscriber(broker, client_id=_hub_id())
    subscriber.subscribe_raw(topic.replace("/telemetry", "/+"), Inbox())
    acks = Inbox()
    try:
        device.subscribe(topic + "-ack", acks)
        assert device.wait_subscribed(WAIT_S)
        for i in range(50):  # a stopping hub's last acknowledgements, then at once its disconnect
            subscriber.publish(topic + "-ack", b"ack-%d" % i)
        subscriber.close()
        assert acks.wait_for(50), len(acks.messages)
    finally:
        device.close()


def test_a_shared_subscription_on_mosquitto() -> None:
    address = BrokerAddress("127.0.0.1", 1883)
    inbox = Inbox()
    subscriber = BulkSubscriber(address, client_id=_hub_id())
    group = uuid.uuid4().hex[:8]
    topic = device_topic(f"cam-{group}", "telemetry")
    subscriber.subscribe_raw(f"$share/{group}/{topic}", inbox)
    device = PahoBroker(address)
    try:
        assert device.publish_and_wait(topic, b"shared", timeout_s=WAIT_S)
        assert inbox.wait_for(1) and inbox.messages[0].topic == topic
    finally:
        device.close()
        subscriber.close()


def test_it_reconnects_and_subscribes_again_after_the_broker_drops_it() -> None:
    address = BrokerAddress("127.0.0.1", 1883)
    inbox = Inbox()
    client_id = _hub_id()
    subscriber = BulkSubscriber(address, client_id=client_id)
    topic = device_topic(f"cam-{client_id[-6:]}", "telemetry")
    subscriber.subscribe_raw(topic, inbox)
    device = PahoBroker(address)
    try:
        thief = socket.create_connection(("127.0.0.1", 1883))  # Mosquitto drops the old holder of a client id
        thief.sendall(b"\x10" + bytes([12 + len(client_id)]) + b"\x00\x04MQTT\x04\x02\x00\x1e")
        thief.sendall(len(client_id).to_bytes(2, "big") + client_id.encode())
        assert thief.recv(4) == b"\x20\x02\x00\x00"
        thief.close()
        assert wait_until(lambda: subscriber.reconnects >= 1 and subscriber.connected, WAIT_S)
        assert device.publish_and_wait(topic, b"after", timeout_s=WAIT_S)
        assert inbox.wait_for(1) and inbox.messages[-1].payload == b"after"
    finally:
        device.close()
        subscriber.close()


# -- against a scripted broker ------------------------------------------------------------------------------


class ScriptedBroker:
    """Accepts connections and answers each with the next script: bytes sent after CONNECT and SUBSCRIBE."""

    def __init__(self, scripts: list[tuple[bytes, bytes]]) -> None:
        self.scripts = scripts
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for connack, after_subscribe in self.scripts:
            conn, _ = self.server.accept()
            with conn:
                conn.recv(1024)  # CONNECT
                conn.sendall(connack)
                if connack[-1]:
                    continue
                conn.recv(1024)  # SUBSCRIBE
                conn.sendall(after_subscribe)
                conn.settimeout(WAIT_S)
                try:
                    while data := conn.recv(1024):
                        self.received.append(data)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


GRANTED = b"\x90\x03\x00\x01\x01"


def test_a_malformed_frame_is_logged_in_one_line_and_the_connection_made_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = publish_frame("edgefleet/v1/devices/cam-1/telemetry", b"good", 5)
    scripted = ScriptedBroker([(b"\x20\x02\x00\x00", GRANTED + good + b"\xf0\x00"), (b"\x20\x02\x00\x00", GRANTED)])
    inbox = Inbox()
    subscriber = BulkSubscriber(BrokerAddress("127.0.0.1", scripted.port), reconnect_max_delay_s=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="fleet.wire.mqtt_bulk"):
            subscriber.subscribe_raw("edgefleet/v1/devices/+/telemetry", inbox)
            assert wait_until(lambda: subscriber.reconnects >= 1 and subscriber.connected, WAIT_S)
        assert [m.payload for m in inbox.messages] == [b"good"]  # delivered, and acknowledged before the drop
        assert b"\x40\x02\x00\x05" in b"".join(scripted.received)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "unexpected MQTT packet type 15" in warnings[0] and "\n" not in warnings[0]
    finally:
        subscriber.close()
        scripted.close()


@pytest.mark.parametrize(
    ("connack", "suback", "reason"),
    [
        (b"\x20\x02\x00\x05", b"", "broker refused the login: not authorized"),
        (b"\x20\x02\x00\x00", b"\x90\x03\x00\x01\x80", "broker refused the subscription edgefleet/v1/#"),
    ],
)
def test_a_refused_login_or_subscription_is_a_clear_error(connack: bytes, suback: bytes, reason: str) -> None:
    scripted = ScriptedBroker([(connack, suback)])
    subscriber = BulkSubscriber(BrokerAddress("127.0.0.1", scripted.port), connect_timeout_s=0.5)
    try:
        with pytest.raises(BrokerConnectionError, match=reason):
            subscriber.subscribe_raw("edgefleet/v1/#", Inbox())
    finally:
        scripted.close()


def test_it_pings_an_idle_broker_and_reconnects_when_no_answer_comes(caplog: pytest.LogCaptureFixture) -> None:
    scripted = ScriptedBroker([(b"\x20\x02\x00\x00", GRANTED), (b"\x20\x02\x00\x00", GRANTED)])  # never a PINGRESP
    subscriber = BulkSubscriber(BrokerAddress("127.0.0.1", scripted.port), keepalive_s=1, reconnect_max_delay_s=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="fleet.wire.mqtt_bulk"):
            subscriber.subscribe_raw("edgefleet/v1/#", Inbox())
            assert wait_until(lambda: subscriber.reconnects >= 1 and subscriber.connected, WAIT_S)
        assert scripted.received[0] == b"\xc0\x00"  # PINGREQ after half the keepalive without traffic
        assert any("did not answer a ping" in r.getMessage() for r in caplog.records)
    finally:
        subscriber.close()
        scripted.close()


def test_a_lost_node_is_left_for_the_next_failover_node() -> None:
    first = ScriptedBroker([(b"\x20\x02\x00\x00", GRANTED + b"\xf0\x00")])  # drops it at once
    second = ScriptedBroker([(b"\x20\x02\x00\x00", GRANTED)])
    subscriber = BulkSubscriber(
        BrokerAddress("127.0.0.1", first.port), failover=[("127.0.0.1", second.port)], reconnect_max_delay_s=1.0
    )
    try:
        subscriber.subscribe_raw("edgefleet/v1/#", Inbox())
        assert wait_until(lambda: subscriber.reconnects >= 1 and subscriber.connected, WAIT_S)
        assert subscriber.node == ("127.0.0.1", second.port)
    finally:
        subscriber.close()
        first.close()
        second.close()
