"""Telemetry in blocks (fleet/telemetry_blocks.py): a block refuses what `validate_batch` refuses, with the same
one-line reason, and aggregates to what `TelemetryAggregate.add` gives batch by batch."""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest
from datasketches import kll_floats_sketch

from fleet.errors import ProtocolError
from fleet.telemetry import TelemetryAggregate, validate_batch
from fleet.telemetry_blocks import aggregate_checked, check_batches, explain
from fleet.wire.fast_telemetry import from_message
from fleet.wire.messages import Histogram, ShadowStats, TelemetryBatch
from fleet.wire.sketches import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS_MS,
    FeatureSketcher,
    HistogramAccumulator,
    serialize_sketch,
)


def _batch(index: int, *, values: int = 150, shadow: bool = False) -> TelemetryBatch:
    rng = np.random.default_rng(index)
    latency = HistogramAccumulator(LATENCY_BUCKETS_MS)
    latency.observe_many(rng.lognormal(3, 0.4, values))
    confidence = HistogramAccumulator(CONFIDENCE_BUCKETS)
    confidence.observe_many(rng.uniform(0.5, 1, values))
    sketches = FeatureSketcher()
    sketches.update_column("x", rng.normal(index % 3, 1, values))
    sketches.update_column("y", rng.normal(size=values // 3 + 1))
    return TelemetryBatch(
        batch_id=f"batch-{index:04d}",
        device_id=f"dev-{index % 4}",
        target="rpi4-arm64",
        model="digits",
        version="1.0",
        window_start=100.0 + index,
        window_end=160.0 + index,
        requests=values,
        errors=index % 3,
        offloaded=index % 2,
        latency_ms=latency.to_histogram(),
        confidence=confidence.to_histogram(),
        predictions={"cat": values - index, "dog": index},
        feature_sketches=sketches.to_wire(),
        shadow=ShadowStats(candidate_version="1.1", compared=10, agreed=9, latency_ms=latency.to_histogram())
        if shadow
        else None,
    )


def _with_sketch(batch: TelemetryBatch, raw: bytes) -> TelemetryBatch:
    return batch.model_copy(
        update={"feature_sketches": {**batch.feature_sketches, "x": base64.b64encode(raw).decode()}}
    )


def _sketch_edit(batch: TelemetryBatch, fmt: str, offset: int, value: float | int) -> TelemetryBatch:
    raw = bytearray(base64.b64decode(batch.feature_sketches["x"]))
    struct.pack_into(fmt, raw, offset if offset >= 0 else len(raw) + offset, value)
    return _with_sketch(batch, bytes(raw))


GOOD = _batch(1, shadow=True)
assert GOOD.shadow is not None
ODD = Histogram(edges=[1.0, 2.0], counts=[1, 0, 0], total=1.0)
MALFORMED = {
    "odd latency edges": GOOD.model_copy(update={"latency_ms": ODD}),
    "odd confidence edges": GOOD.model_copy(update={"confidence": ODD}),
    "odd shadow edges": GOOD.model_copy(update={"shadow": GOOD.shadow.model_copy(update={"latency_ms": ODD})}),
    "one count short": GOOD.model_copy(
        update={"latency_ms": GOOD.latency_ms.model_copy(update={"counts": GOOD.latency_ms.counts[:-1]})}
    ),
    "more errors than requests": GOOD.model_copy(update={"errors": GOOD.requests + 1}),
    "more offloaded than requests": GOOD.model_copy(update={"offloaded": GOOD.requests + 1}),
    "more agreements than comparisons": GOOD.model_copy(
        update={"shadow": GOOD.shadow.model_copy(update={"agreed": 11})}
    ),
    "ends before it starts": GOOD.model_copy(update={"window_end": GOOD.window_start - 1}),
    "NaN in a sketch": _sketch_edit(GOOD, "<f", -4, float("nan")),
    "sketch weights off": _sketch_edit(GOOD, "<Q", 8, 7),
    "sketch not KLL": _sketch_edit(GOOD, "<B", 2, 9),
    "truncated sketch": GOOD.model_copy(
        update={"feature_sketches": {"x": base64.b64encode(base64.b64decode(GOOD.feature_sketches["x"])[:-4]).decode()}}
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_block_refuses_what_validate_batch_refuses_with_its_reason(name: str) -> None:
    bad = MALFORMED[name]
    with pytest.raises(ProtocolError) as reference:
        validate_batch(bad)
    checked = check_batches([from_message(GOOD), from_message(bad), from_message(_batch(2))])
    assert checked[0] is not None and checked[1] is None and checked[2] is not None  # refused alone
    with pytest.raises(ProtocolError) as refusal:
        explain(from_message(bad))
    assert str(refusal.value) == str(reference.value) and "\n" not in str(refusal.value)


def test_a_valid_batch_the_block_leaves_aside_is_cleared_by_explain() -> None:
    """A single-item sketch marked serial version 1 (valid, but not what datasketches 5 writes): the block
    leaves it to the reference checks, which accept it."""
    single = kll_floats_sketch(200)
    single.update(1.5)
    raw = bytearray(single.serialize())
    raw[1] = 1
    odd = _with_sketch(GOOD, bytes(raw))
    validate_batch(odd)
    assert check_batches([from_message(odd)]) == [None]
    assert (
        explain(from_message(odd)).sketches["x"].n
        == kll_floats_sketch.deserialize(base64.b64decode(odd.feature_sketches["x"])).n
    )


def test_a_block_aggregates_to_what_batch_by_batch_aggregation_gives() -> None:
    batches = [_batch(i, values=150 if i % 2 else 600, shadow=i % 3 == 0) for i in range(40)]
    big = kll_floats_sketch(200)  # a sketch in estimation mode among exact ones
    big.update(np.random.default_rng(9).normal(size=5000).astype(np.float32))
    batches.append(_batch(99).model_copy(update={"feature_sketches": {"x": serialize_sketch(big)}}))
    checked = check_batches([from_message(b) for b in batches])
    assert all(c is not None for c in checked)
    bulk = aggregate_checked([c for c in checked if c is not None])
    one_by_one = TelemetryAggregate.from_batches(batches)
    for field in ("requests", "errors", "offloaded", "batches", "shadow_compared", "shadow_agreed"):
        assert getattr(bulk, field) == getattr(one_by_one, field), field
    assert (bulk.devices, bulk.targets, bulk.predictions) == (
        one_by_one.devices,
        one_by_one.targets,
        one_by_one.predictions,
    )
    assert (bulk.window_start, bulk.window_end) == (one_by_one.window_start, one_by_one.window_end)
    for mine, theirs in (
        (bulk.latency_ms, one_by_one.latency_ms),
        (bulk.confidence, one_by_one.confidence),
        (bulk.shadow_latency_ms, one_by_one.shadow_latency_ms),
    ):
        assert mine.to_histogram().counts == theirs.to_histogram().counts
        assert mine.total == pytest.approx(theirs.total)
    assert set(bulk.sketches) == set(one_by_one.sketches) == {"x", "y"}
    for name, sketch in bulk.sketches.items():
        reference = one_by_one.sketches[name]
        assert (sketch.n, sketch.get_min_value(), sketch.get_max_value()) == (
            reference.n,
            reference.get_min_value(),
            reference.get_max_value(),
        )
        for q in (0.1, 0.5, 0.9):  # both within the sketch's rank error of each other
            assert abs(reference.get_rank(sketch.get_quantile(q)) - q) <= 2 * sketch.normalized_rank_error(False)
