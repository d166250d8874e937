"""The hub's fast telemetry decoder (fleet/wire/fast_telemetry.py): the same fields as the pydantic messages,
the same values, and nothing accepted that `messages.decode` refuses (it returns None: the caller asks
`messages.decode`, which says why)."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import msgspec
import numpy as np
import pytest

from fleet.errors import ProtocolError
from fleet.wire.fast_telemetry import MIRRORS, decode_telemetry, from_message, to_message
from fleet.wire.messages import MAX_JSON_BYTES, Histogram, ShadowStats, TelemetryBatch, decode, encode
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS, FeatureSketcher, HistogramAccumulator


def _batch() -> TelemetryBatch:
    rng = np.random.default_rng(2)
    latency = HistogramAccumulator(LATENCY_BUCKETS_MS)
    latency.observe_many(rng.lognormal(3, 0.4, 300))
    confidence = HistogramAccumulator(CONFIDENCE_BUCKETS)
    confidence.observe_many(rng.uniform(0.5, 1, 300))
    sketches = FeatureSketcher()
    sketches.update_column("x", rng.normal(size=300))
    sketches.update_column("y", rng.normal(size=50))
    return TelemetryBatch(
        batch_id="batch-0001",
        device_id="cam-1",
        target="rpi4-arm64",
        model="digits",
        version="1.0",
        window_start=100.0,
        window_end=160.5,
        requests=300,
        errors=2,
        offloaded=1,
        latency_ms=latency.to_histogram(),
        confidence=confidence.to_histogram(),
        predictions={"cat": 200, "dog": 100},
        feature_sketches=sketches.to_wire(),
        shadow=ShadowStats(candidate_version="1.1", compared=10, agreed=9, latency_ms=latency.to_histogram()),
        contract_rows=300,
        contract_violations={"x.range": 3},
    )


GOOD = _batch()
RAW: dict[str, Any] = json.loads(encode(GOOD))


def _payload(**changes: Any) -> bytes:
    return json.dumps({**RAW, **changes}).encode()


def test_the_structs_mirror_the_messages_field_for_field() -> None:
    for struct, model in MIRRORS.items():
        assert {f.name for f in msgspec.structs.fields(struct)} == set(model.model_fields), struct.__name__


def test_a_batch_decodes_to_the_values_the_reference_decoder_gives() -> None:
    fast = decode_telemetry(encode(GOOD))
    assert fast is not None
    assert to_message(fast) == decode(TelemetryBatch, encode(GOOD)) == GOOD
    assert from_message(GOOD) == fast
    assert fast.feature_sketches == {n: base64.b64decode(t) for n, t in GOOD.feature_sketches.items()}


REFUSED: dict[str, bytes] = {
    "NaN": encode(GOOD).replace(b'"window_end":160.5', b'"window_end":NaN'),
    "infinite by overflow": _payload(window_start=1e308).replace(b"1e+308", b"1e400"),
    "no schema_version": json.dumps({k: v for k, v in RAW.items() if k != "schema_version"}).encode(),
    "schema_version 2": _payload(schema_version=2),
    "unknown field": _payload(colour="red"),
    "unknown histogram field": _payload(latency_ms={**RAW["latency_ms"], "unit": "ms"}),
    "batch id with a newline": _payload(batch_id="batch-0001\n"),
    "batch id too short": _payload(batch_id="b-1"),
    "bad device id": _payload(device_id="cam 1"),
    "version too long": _payload(version="v" * 65),
    "count beyond 32 bits": _payload(requests=2**31),
    "negative count": _payload(errors=-1),
    "negative window": _payload(window_start=-1.0),
    "too many labels": _payload(predictions={f"l{i}": 1 for i in range(1001)}),
    "too many sketches": _payload(feature_sketches={f"f{i}": "AAAA" for i in range(257)}),
    "empty label": _payload(predictions={"": 1}),
    "no edges": _payload(latency_ms={"edges": [], "counts": [0], "total": 0.0}),
    "negative total": _payload(confidence={**RAW["confidence"], "total": -1.0}),
    "shadow count negative": _payload(shadow={**RAW["shadow"], "compared": -1}),
    "oversized": _payload(predictions={"x" * 100: 1}).replace(b"}", b"}" + b" " * MAX_JSON_BYTES, 1),
    "not JSON": b"{not json",
    "not an object": b"[1, 2]",
    "invalid UTF-8": _payload(model="digits").replace(b'"digits"', b'"dig\xffits"'),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_the_reference_decoder_refuses_the_fast_one_refuses(name: str) -> None:
    payload = REFUSED[name]
    assert decode_telemetry(payload) is None
    with pytest.raises(ProtocolError):
        decode(TelemetryBatch, payload)


def test_the_fast_decoder_stands_aside_for_valid_payloads_it_does_not_read() -> None:
    """The reference decoder accepts these (lax numbers, a byte-order mark, a sketch that is not base64, which
    validation refuses later): the caller asks it instead."""
    for payload in (
        _payload(requests=300.0),
        _payload(requests="300"),
        b"\xef\xbb\xbf" + encode(GOOD),
        _payload(feature_sketches={"x": "not base64!"}),
    ):
        assert decode_telemetry(payload) is None
        assert decode(TelemetryBatch, payload).requests == 300


def test_random_edits_accepted_by_the_fast_decoder_are_accepted_alike_by_the_reference() -> None:
    rand = random.Random(5)
    pool: list[Any] = [
        None,
        True,
        0,
        -1,
        1.5,
        2**31,
        1e308,
        "",
        "x",
        "a" * 200,
        "AAAA",
        "ab\n",
        [],
        {},
        [1.0],
        {"k": 1},
    ]

    def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix] if prefix else []
        if isinstance(value, dict):
            for key, inner in value.items():
                found += paths(inner, (*prefix, key))
        elif isinstance(value, list):
            for index, inner in enumerate(value[:3]):
                found += paths(inner, (*prefix, index))
        return found

    every = paths(RAW)
    accepted = 0
    for _ in range(400):
        data = json.loads(json.dumps(RAW))
        *parent_path, last = rand.choice(every)
        parent = data
        for step in parent_path:
            parent = parent[step]
        parent[last] = rand.choice(pool)
        payload = json.dumps(data).encode()
        fast = decode_telemetry(payload)
        if fast is None:
            continue
        accepted += 1
        assert to_message(fast) == decode(TelemetryBatch, payload), (parent_path, last, parent[last])
    assert accepted > 20  # some edits stay valid (a count of 0, an empty label set): both decoders agree


def test_histograms_carried_over_keep_their_values() -> None:
    fast = from_message(GOOD.model_copy(update={"confidence": Histogram(edges=[1.0], counts=[1, 2], total=0.5)}))
    assert (fast.confidence.edges, fast.confidence.counts, fast.confidence.total) == ([1.0], [1, 2], 0.5)
