"""Device telemetry: per-version batches, feature sketches filled in blocks, the bounded outbox, and the
sender that deletes a batch only once the hub acknowledged it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import time_machine

from agent.telemetry import SKETCH_FLUSH_ROWS, Outbox, TelemetryCollector, TelemetrySender, batch_id_of
from fleet.wire.messages import TelemetryAck, encode
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS, deserialize_sketch
from fleet.wire.transport import Message


def test_every_input_row_reaches_the_feature_sketches(tmp_path: Path) -> None:
    collector = TelemetryCollector("d-1", "x86-onnx-cpu")
    rows = np.arange(3 * (SKETCH_FLUSH_ROWS + 10), dtype=np.float32).reshape(-1, 3)
    for row in rows:  # crosses the block size once, then leaves a partial block for drain() to flush
        collector.record(
            "m",
            "1.0.0",
            latency_ms=1.0,
            labels=["a"],
            confidences=[0.9],
            inputs=row[None, :],
            feature_names=["x", "y", "z"],
        )
    collector.record_error("m", "1.0.0")
    (batch,) = collector.drain()
    assert (batch.requests, batch.errors) == (len(rows) + 1, 1)
    assert set(batch.feature_sketches) == {"x", "y", "z"}
    x = deserialize_sketch(batch.feature_sketches["x"])
    assert x.n == len(rows) and x.get_min_value() == rows[0, 0] and x.get_max_value() == rows[-1, 0]
    assert collector.drain() == []


def test_block_buffered_telemetry_matches_the_exact_statistics_of_every_request() -> None:
    """Histograms, label counts and sketches fill a block at a time; the batch must still describe every
    request exactly (histograms, counts) or within the sketch's bound (quantiles), partial block included."""
    collector = TelemetryCollector("d-1", "x86-onnx-cpu")
    rng = np.random.default_rng(7)
    latencies, confidences, labels, rows = [], [], [], []
    for i in range(5 * SKETCH_FLUSH_ROWS + 37):  # batches of 1 and 3 rows, never a whole number of blocks
        n = 3 if i % 5 == 0 else 1
        batch_rows = rng.normal(size=(n, 2)).astype(np.float32)
        conf = rng.uniform(0.05, 1.0, size=n).tolist()
        names = [f"c{int(c * 10)}" for c in conf]
        latency = float(rng.exponential(4.0))
        collector.record(
            "m",
            "1.0.0",
            latency_ms=latency,
            labels=names,
            confidences=conf,
            inputs=batch_rows,
            feature_names=["a", "b"],
        )
        latencies.append(latency)
        confidences += conf
        labels += names
        rows.append(batch_rows)
    (batch,) = collector.drain()
    values = np.concatenate(rows)
    for hist, observed, edges in (
        (batch.latency_ms, latencies, LATENCY_BUCKETS_MS),
        (batch.confidence, confidences, CONFIDENCE_BUCKETS),
    ):
        exact = np.bincount(np.searchsorted(edges, observed, side="left"), minlength=len(edges) + 1)
        assert hist.counts == exact.tolist()
        assert hist.total == pytest.approx(sum(observed))
    assert batch.requests == len(latencies) and batch.predictions == dict(Counter(labels))
    for column, name in enumerate(["a", "b"]):
        sketch = deserialize_sketch(batch.feature_sketches[name])
        assert sketch.n == len(values)
        bound = sketch.normalized_rank_error(False)
        for q in (0.1, 0.5, 0.9):
            true_rank = float(np.mean(values[:, column] <= sketch.get_quantile(q)))
            assert abs(true_rank - q) <= bound + 1 / len(values)


def test_pending_telemetry_stays_bounded_without_a_drain() -> None:
    collector = TelemetryCollector("d-1", "x86-onnx-cpu")
    for _ in range(10 * SKETCH_FLUSH_ROWS):  # no inputs: only latencies, confidences and labels wait
        collector.record("m", "1.0.0", latency_ms=1.0, labels=["a", "b"], confidences=[0.9, 0.8])
    (stats,) = collector._stats.values()
    assert len(stats.pending_latencies) < SKETCH_FLUSH_ROWS and len(stats.pending_labels) < SKETCH_FLUSH_ROWS
    assert stats.latency.count + len(stats.pending_latencies) == 10 * SKETCH_FLUSH_ROWS


def test_outbox_keeps_order_and_drops_the_oldest_beyond_its_bound(tmp_path: Path) -> None:
    collector = TelemetryCollector("d-1", "x86-onnx-cpu")
    outbox = Outbox(tmp_path, max_batches=10)
    ids = []
    for _ in range(12):
        collector.record("m", "1.0.0", latency_ms=1.0, labels=["a"], confidences=[0.9])
        (batch,) = collector.drain()
        ids.append(batch.batch_id)
        outbox.put(batch)
    assert outbox.dropped == 2
    assert [p.name.split("-", 1)[1].removesuffix(".json") for p in outbox.pending()] == ids[2:]
    reopened = Outbox(tmp_path, max_batches=10)  # survives a restart, and keeps appending in order
    collector.record("m", "1.0.0", latency_ms=1.0, labels=["a"], confidences=[0.9])
    (batch,) = collector.drain()
    reopened.put(batch)
    assert reopened.pending()[-1].name.endswith(f"{batch.batch_id}.json")


def _queued(outbox: Outbox, n: int) -> list[str]:
    collector = TelemetryCollector("d-1", "x86-onnx-cpu")
    ids = []
    for _ in range(n):
        collector.record("m", "1.0.0", latency_ms=1.0, labels=["a"], confidences=[0.9])
        (batch,) = collector.drain()
        outbox.put(batch)
        ids.append(batch.batch_id)
    return ids


def _ack(sender: TelemetrySender, stored: list[str], rejected: dict[str, str] | None = None) -> None:
    ack = TelemetryAck(device_id=sender.device_id, stored=stored, rejected=rejected or {})
    sender.on_ack(Message(sender.ack_topic, encode(ack)))


def test_a_batch_leaves_the_outbox_only_when_the_hub_acknowledges_it(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    published: list[str] = []
    sender = TelemetrySender(outbox, "d-1", lambda _t, p: published.append(json.loads(p)["batch_id"]) or True)
    ids = _queued(outbox, 3)
    assert sender.flush() == 3 and published == ids
    assert len(outbox) == 3  # the broker took them; no hub has stored them yet
    assert sender.flush() == 0  # awaiting acknowledgement: not sent again at once
    _ack(sender, ids[:2])
    assert [batch_id_of(p) for p in outbox.pending()] == ids[2:]
    assert not sender.wait_settled(0)
    _ack(sender, ids[2:])
    assert len(outbox) == 0 and sender.wait_settled(0) and sender.acknowledged == 3


def test_unacknowledged_batches_are_sent_again_with_the_same_id_after_the_timeout(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    published: list[str] = []
    sender = TelemetrySender(
        outbox, "d-1", lambda _t, p: published.append(json.loads(p)["batch_id"]) or True, ack_timeout_s=30
    )
    ids = _queued(outbox, 2)
    with time_machine.travel(1_000_000.0, tick=False) as clock:
        sender.flush()
        clock.shift(29)
        assert sender.flush() == 0
        clock.shift(2)  # the hub was down: no acknowledgement within the timeout
        assert sender.flush() == 2 and published == ids + ids and sender.resent == 2
        _ack(sender, ids)
        clock.shift(60)
        assert sender.flush() == 0 and len(outbox) == 0


def test_a_reconnect_resends_at_once_and_in_flight_batches_are_capped(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    published: list[str] = []
    sender = TelemetrySender(
        outbox, "d-1", lambda _t, p: published.append(json.loads(p)["batch_id"]) or True, max_in_flight=3
    )
    ids = _queued(outbox, 5)
    assert sender.flush() == 3 and published == ids[:3]  # a returning hub is not flooded
    sender.resend_all()  # the link came back: acknowledgements sent meanwhile are lost
    assert not sender.wait_settled(0)  # what was sent still awaits its acknowledgement
    assert sender.flush() == 3 and published[3:] == ids[:3]
    assert sender.resent == 3  # counted as resends, not as first sends


def test_batches_the_hub_refuses_are_set_aside_and_foreign_acks_ignored(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    sender = TelemetrySender(outbox, "d-1", lambda _t, _p: True)
    ids = _queued(outbox, 2)
    sender.flush()
    foreign = TelemetryAck(device_id="d-2", stored=ids)
    sender.on_ack(Message(sender.ack_topic, encode(foreign)))
    sender.on_ack(Message(sender.ack_topic, b"not json"))
    assert len(outbox) == 2
    _ack(sender, [], {ids[0]: "histogram does not use the standard edges"})
    assert [batch_id_of(p) for p in outbox.pending()] == ids[1:]
    assert [batch_id_of(p) for p in (tmp_path / "rejected").glob("*.json")] == ids[:1]
    assert sender.rejected == 1
