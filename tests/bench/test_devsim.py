"""The device simulator's MQTT codec (bench/devsim/mqtt_codec.py) against the MQTT 3.1.1 byte layout, and its
telemetry template against the wire protocol's own decoder: a simulated device must send what a real one does."""

from __future__ import annotations

import pytest

from bench.devsim import mqtt_codec as codec
from bench.devsim.telemetry import BatchTemplate
from fleet.wire.messages import TelemetryBatch, decode


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
