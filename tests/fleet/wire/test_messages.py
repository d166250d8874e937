"""Wire protocol v1: validation errors name the topic and field; chunk frames detect corruption."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.messages import FetchRequest, UpdateEvent, UpdateState, decode, decode_chunk, encode, encode_chunk

SHA = "ab" * 32


def test_round_trip_keeps_schema_version() -> None:
    event = UpdateEvent(device_id="d-1", deployment_id="dep-1", state=UpdateState.VERIFY)
    payload = encode(event)
    assert b'"schema_version":1' in payload
    assert decode(UpdateEvent, payload) == event


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"schema_version": 2}', "unsupported schema_version 2"),
        (b'{"schema_version": 1, "request_id": "r", "kind": "everything"}', "invalid FetchRequest: kind"),
        (b"x" * 600_000, "exceeds"),
    ],
)
def test_bad_messages_say_what_and_where(payload: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        decode(FetchRequest, payload, topic="edgefleet/v1/devices/d/fetch")
    assert "edgefleet/v1/devices/d/fetch" in str(info.value)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ProtocolError, match="evil: Extra inputs are not permitted"):
        decode(FetchRequest, b'{"schema_version": 1, "request_id": "r", "kind": "chunks", "evil": 1}')


def test_chunk_frames_round_trip_and_detect_corruption() -> None:
    frame = encode_chunk(SHA, 2, 5, b"hello world")
    decoded = decode_chunk(frame)
    assert (decoded.index, decoded.count, decoded.data) == (2, 5, b"hello world")
    corrupt = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(ProtocolError, match=r"chunk 2 .* is corrupt"):
        decode_chunk(corrupt)
    with pytest.raises(ProtocolError, match="bad magic"):
        decode_chunk(b"XXXX" + frame[4:])
    with pytest.raises(ProtocolError, match="out of range"):
        decode_chunk(encode_chunk(SHA, 5, 5, b"x"))


def test_topics_validate_device_ids() -> None:
    assert topics.device_topic("cam-1", "state") == "edgefleet/v1/devices/cam-1/state"
    assert topics.parse_device_topic("edgefleet/v1/devices/cam-1/telemetry") == ("cam-1", "telemetry")
    for bad in ("a/b", "+", "#", "", "x" * 80):
        with pytest.raises(ProtocolError):
            topics.device_topic(bad, "state")
    with pytest.raises(ProtocolError):
        topics.parse_device_topic("edgefleet/v1/devices/cam-1/unknown")


def test_a_batch_without_contract_checks_encodes_as_before_contracts_existed() -> None:
    """Hubs from before contracts refuse unknown fields: a device without a contract must not send them."""
    import json

    from fleet.wire.messages import Histogram, TelemetryBatch, encode

    histogram = Histogram(edges=[1.0], counts=[1, 0], total=0.5)
    plain = TelemetryBatch(batch_id="b" * 32, device_id="cam-1", target="rpi4-arm64", model="m", version="1.0.0",
                           window_start=1.0, window_end=2.0, requests=1, errors=0, latency_ms=histogram,
                           confidence=histogram)  # fmt: skip
    assert "contract_rows" not in json.loads(encode(plain))
    checked = plain.model_copy(update={"contract_rows": 3, "contract_violations": {"input.range": 1}})
    body = json.loads(encode(checked))
    assert body["contract_rows"] == 3 and body["contract_violations"] == {"input.range": 1}


def test_an_mqtt_order_encodes_as_before_http_transport_existed() -> None:
    """Agents from before HTTP downloads refuse unknown fields: an MQTT order must not carry the new ones."""
    import json

    from fleet.wire.messages import DeploymentOrder

    fields: dict[str, Any] = {
        "deployment_id": "dep-1",
        "model": "m",
        "version": "1.0.0",
        "target": "rpi4-arm64",
        "tuf_target": "bundles/m.zip",
        "sha256": SHA,
        "size_bytes": 10,
        "chunk_size": 1024,
        "chunk_count": 1,
    }
    plain = json.loads(encode(DeploymentOrder(**fields)))
    assert not {"transport", "mirrors", "hub_url"} & set(plain)
    http = DeploymentOrder(**fields, transport="http", mirrors=["https://cdn.example/b"], hub_url="https://hub/bundles")
    assert decode(DeploymentOrder, encode(http)) == http
    for bad, message in (
        ({"transport": "http"}, "names at least one mirror or the hub_url"),
        ({"hub_url": "https://hub/bundles"}, "an mqtt order names no download URLs"),
        ({"transport": "http", "mirrors": ["ftp://cdn/b"]}, "mirrors.0"),
        ({"transport": "http", "hub_url": "https://hub/bundles?token=x"}, "hub_url"),
    ):
        with pytest.raises(ProtocolError, match=message):
            decode(DeploymentOrder, json.dumps({**plain, **bad}).encode())
