"""Telemetry summary tables (hub/registry/telemetry_tables.py): sketches packed as bytes, and batches merged
at ingestion into per model version x target x window aggregates, exactly once, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator

import pytest

from fleet.errors import ProtocolError
from fleet.telemetry import TelemetryAggregate
from fleet.wire.messages import TelemetryBatch
from hub.registry import Database, Registry, TelemetryRecord
from hub.registry.telemetry_tables import pack_sketches, unpack_sketches
from tests.hub.monitoring.telemetry_scenario import BASELINE, MODEL, scenario


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    db = Database(database_url)
    yield Registry(db)
    db.close()


@pytest.fixture(scope="module")
def batches() -> list[TelemetryBatch]:
    return [TelemetryBatch.model_validate(b) for b in scenario()["batches"]]


def test_packed_sketches_round_trip_and_truncation_is_refused() -> None:
    sketches = {"x": b"\x01\x02\x03", "é": b"", "long": bytes(range(256)) * 40}
    packed = pack_sketches(sketches)
    assert unpack_sketches(packed) == sketches
    with pytest.raises(ProtocolError, match="truncated"):
        unpack_sketches(packed[:-1])


def test_sketches_are_stored_as_bytes_and_read_back_unchanged(
    registry: Registry, batches: list[TelemetryBatch]
) -> None:
    registry.store_telemetry(batches[:5])
    with registry.db.session() as session:
        row = session.get(TelemetryRecord, batches[0].batch_id)
        assert row is not None and "feature_sketches" not in row.payload
        assert unpack_sketches(row.sketches or b"") == {
            n: base64.b64decode(t) for n, t in batches[0].feature_sketches.items()
        }
    assert registry.telemetry_batches() == sorted(batches[:5], key=lambda b: b.window_end)


def _same(a: TelemetryAggregate, b: TelemetryAggregate) -> None:
    assert (a.batches, a.requests, a.errors, a.devices) == (b.batches, b.requests, b.errors, b.devices)
    assert a.predictions == b.predictions and a.latency_ms.to_histogram().counts == b.latency_ms.to_histogram().counts
    assert a.latency_ms.total == pytest.approx(b.latency_ms.total)
    assert set(a.sketches) == set(b.sketches)
    for name, sk in a.sketches.items():
        assert sk.n == b.sketches[name].n
        assert sk.get_quantile(0.5) == pytest.approx(b.sketches[name].get_quantile(0.5), abs=0.05)


def test_each_stored_batch_is_merged_once_into_its_window_aggregate(
    registry: Registry, batches: list[TelemetryBatch]
) -> None:
    mine = [b for b in batches if b.version == BASELINE]
    half = len(mine) // 2
    registry.store_telemetry(mine[:half], aggregate_window_s=60.0)
    registry.store_telemetry(mine, aggregate_window_s=60.0)  # the first half again: duplicates add nothing
    windows = registry.windows.by_target(MODEL, BASELINE)
    assert len({(t, a.window_start) for t, a in windows}) == len(windows) > 1  # several targets and windows
    for target in {b.target for b in mine}:
        merged = TelemetryAggregate()
        for _, agg in (w for w in windows if w[0] == target):
            merged.merge(agg)
        _same(merged, TelemetryAggregate.from_batches(b for b in mine if b.target == target))


def test_concurrent_writers_aggregate_every_batch_exactly_once(
    registry: Registry, batches: list[TelemetryBatch]
) -> None:
    mine = [b for b in batches if b.version == BASELINE]
    errors: list[BaseException] = []

    def write(part: list[TelemetryBatch]) -> None:
        try:
            for start in range(0, len(part), 7):
                registry.store_telemetry(part[start : start + 7])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(mine[i::2] + mine[: len(mine) // 3],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(a.batches for _, a in registry.windows.by_target(MODEL, BASELINE)) == len(mine)
