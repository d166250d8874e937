"""The device simulator's MQTT codec (bench/devsim/mqtt_codec.py) against the MQTT 3.1.1 byte layout, its
telemetry template against the wire protocol's own decoder, and its download of retained chunks on real brokers:
a simulated device must send what a real one does."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from bench.devsim import mqtt_codec as codec
from bench.devsim.device import SimDevice
from bench.devsim.fleet import SimFleet
from bench.devsim.telemetry import BatchTemplate
from fleet.wire import topics
from fleet.wire.messages import FetchRequest, TelemetryBatch, decode, encode, encode_chunk
from fleet.wire.mqtt import BrokerAddress
from fleet.wire.transport import Message
from hub.bundles.store import ArtifactStore
from hub.bundles.transfer import BundleTransfer
from hub.bundles.tuf_repository import TufRepository
from tests.mqtt_broker import WAIT_S, clear_retained, hub_client, retained_order, unique_device_id

CHUNK = 256


def test_publish_subscribe_and_unsubscribe_bytes_follow_the_spec() -> None:
    # PUBLISH, QoS 1, retain: 0x33, remaining length, topic, packet id, payload (MQTT 3.1.1 section 3.3)
    assert codec.encode_publish("a/b", b"{}", qos=1, retain=True, packet_id=1) == b"\x33\x09\x00\x03a/b\x00\x01{}"
    assert codec.encode_publish("a/b", b"{}") == b"\x30\x07\x00\x03a/b{}"  # QoS 0: no packet id
    # SUBSCRIBE: 0x82, packet id, then (filter, requested QoS) pairs (section 3.8)
    assert codec.encode_subscribe(5, [("a/b", 1), ("c/+", 0)]) == b"\x82\x0e\x00\x05\x00\x03a/b\x01\x00\x03c/+\x00"
    assert codec.encode_unsubscribe(6, ["a/b"]) == b"\xa2\x07\x00\x06\x00\x03a/b"
    assert codec.encode_puback(258) == b"\x40\x02\x01\x02"


def test_connect_carries_clean_session_credentials_and_a_retained_will() -> None:
    packet = codec.encode_connect(
        "dev-1", keepalive_s=60, username="dev-1", password="pw", will=("t/state", b"off", 1, True)
    )
    (parsed,) = codec.PacketReader().feed(packet)
    assert parsed.kind == codec.CONNECT
    body = parsed.body
    assert body[:7] == b"\x00\x04MQTT\x04"
    assert body[7] == 0x02 | 0x04 | (1 << 3) | 0x20 | 0x40 | 0x80  # clean, will QoS 1 retained, password, user
    assert body[8:10] == b"\x00\x3c"
    assert body[10:] == b"\x00\x05dev-1\x00\x07t/state\x00\x03off\x00\x05dev-1\x00\x02pw"


def test_reader_splits_a_stream_at_any_boundary_and_parses_publish() -> None:
    big = bytes(range(256)) * 600  # a remaining length of three varint bytes
    stream = codec.encode_publish("x/y", big, qos=1, packet_id=7) + codec.encode_puback(9) + b"\xd0\x00"
    reader = codec.PacketReader()
    packets = [p for i in range(0, len(stream), 1000) for p in reader.feed(stream[i : i + 1000])]
    assert [p.kind for p in packets] == [codec.PUBLISH, codec.PUBACK, codec.PINGRESP]
    message = codec.parse_publish(packets[0])
    assert (message.topic, message.payload, message.qos, message.packet_id) == ("x/y", big, 1, 7)
    assert codec.packet_id_of(packets[1]) == 9


def test_qos2_and_oversized_lengths_are_refused() -> None:
    with pytest.raises(codec.CodecError):
        codec.encode_publish("x", b"", qos=2)
    with pytest.raises(codec.CodecError):
        list(codec.PacketReader().feed(b"\x30\xff\xff\xff\xff\x01"))


def test_telemetry_template_renders_batches_the_hub_accepts() -> None:
    template = BatchTemplate("x86-onnx-cpu", "digits", "1.0.0", features=3, values=50)
    first_id, first = template.render("dev-1", 10.0, now=1000.0)
    second_id, _ = template.render("dev-2", 10.0, now=1000.0)
    batch = decode(TelemetryBatch, first)
    assert (batch.batch_id, batch.device_id, batch.window_start, batch.window_end) == (first_id, "dev-1", 990.0, 1000.0)
    assert len(batch.feature_sketches) == 3 and batch.requests == 50
    assert second_id != first_id


@pytest.mark.parametrize("missing", [None, 2], ids=["all-retained", "one-missing"])
def test_a_retained_chunks_order_asks_only_for_what_the_broker_did_not_keep(
    mqtt_address: BrokerAddress, tmp_path: Path, missing: int | None
) -> None:
    store = ArtifactStore(tmp_path / "store")
    data = os.urandom(5 * CHUNK + 17)  # a digest no earlier run left retained on Mosquitto
    sha = store.put_bytes(data)
    count = math.ceil(len(data) / CHUNK)
    device_id = unique_device_id()
    order = retained_order(data, CHUNK)
    hub = hub_client(mqtt_address)
    transfer = BundleTransfer(hub, store, TufRepository(tmp_path / "tuf"), chunk_size=CHUNK, rebroadcast_window_s=0)
    asked: list[list[int]] = []

    def on_fetch(message: Message) -> None:
        request = decode(FetchRequest, message.payload)
        asked.append(request.chunks)
        transfer.handle(device_id, request)

    hub.subscribe(topics.device_topic(device_id, "fetch"), on_fetch)
    assert hub.wait_subscribed(WAIT_S)
    retained = [topics.retained_chunk_topic(sha, i) for i in range(count) if i != missing]
    fleet = SimFleet([(mqtt_address.host, mqtt_address.port)], heartbeat_s=0)
    device = SimDevice(device_id, "x86-onnx-cpu", None, fleet, chunk_timeout_s=2.0, verify=False)
    try:
        for topic in retained:
            index = int(topic.rsplit("/", 1)[1])
            frame = encode_chunk(sha, index, count, data[index * CHUNK : (index + 1) * CHUNK])
            assert hub.publish_and_wait(topic, frame, retain=True, timeout_s=WAIT_S)
        fleet.start([device])
        assert fleet.wait_for(lambda f: f.ready == 1, WAIT_S)
        assert hub.publish_and_wait(topics.device_topic(device_id, "deployment"), encode(order), timeout_s=WAIT_S)
        assert fleet.wait_for(lambda f: f.finished + f.failed == 1, WAIT_S)
        assert fleet.finished == 1 and device.failure is None
        assert asked == ([] if missing is None else [[missing]])  # asked once the retained chunks stopped
    finally:
        fleet.stop()
        clear_retained(hub, retained)
        transfer.close()
        hub.close()


class LostRecorder:
    """`FleetHooks` that keeps why a device was lost (and ignores the rest)."""

    def __init__(self) -> None:
        self.lost: list[str] = []

    def device_ready(self, device: SimDevice, first: bool) -> None:
        return None

    def device_lost(self, device: SimDevice, reason: str) -> None:
        self.lost.append(reason)

    def device_finished(self, device: SimDevice, ok: bool) -> None:
        return None

    def telemetry_acked(self, device: SimDevice, stored: int, rejected: int) -> None:
        return None

    def other_message(self, device: SimDevice, topic: str, payload: bytes) -> None:
        return None


def test_a_cleared_retained_chunk_does_not_end_the_session() -> None:
    hooks = LostRecorder()
    device = SimDevice("sim-1", "x86-onnx-cpu", None, hooks)
    device.on_message(topics.retained_chunk_topic("ab" * 32, 0), b"")  # the hub clearing it once a rollout ends
    device.on_message(topics.bundle_topic("ab" * 32), b"junk")  # a broken frame still does
    assert len(hooks.lost) == 1 and "bad magic" in hooks.lost[0]
