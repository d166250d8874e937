"""Device telemetry: per-version batches, feature sketches filled in blocks, the bounded outbox."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.telemetry import SKETCH_FLUSH_ROWS, Outbox, TelemetryCollector
from fleet.wire.sketches import deserialize_sketch


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
