"""Telemetry summary tables (hub/registry/telemetry_tables.py): sketches packed as bytes, and batches merged
at ingestion into per model version x target x window aggregates, exactly once, one row per writer (shard)
merged at read time, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy
from alembic import command
from sqlmodel import col, select

from fleet.errors import ProtocolError
from fleet.telemetry import TelemetryAggregate
from fleet.wire.messages import TelemetryBatch
from hub.registry import Database, Device, Registry, TelemetryRecord, TelemetryWindowAggregate
from hub.registry.migrations import alembic_config
from hub.registry.telemetry_tables import pack_sketches, unpack_sketches
from tests.hub.monitoring.telemetry_scenario import BASELINE, MODEL, scenario
from tests.waiting import wait_until


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
    labels = scenario()["labels"]
    with registry.db.session() as session:  # the label rows are folded exactly once too
        for device, region in labels.items():
            session.add(Device(id=device, target="t", labels=region, credential_hash="-"))
    registry.device_labels.invalidate()

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
    read = registry.windows.by_label(MODEL, BASELINE, {"region"})
    for region in ("eu", "us"):
        expected = sum(labels[b.device_id]["region"] == region for b in mine)
        assert sum(a.batches for _, _, value, a in read.labels if value == region) == expected


def test_workers_fold_into_their_own_rows_without_waiting_and_reads_merge_them(
    registry: Registry, batches: list[TelemetryBatch]
) -> None:
    """Worker "a" holds its aggregate rows locked in an open transaction; worker "b" (its own shard) still
    stores and commits. Sharing one shard, "b" would wait on the row lock until "a" commits (PostgreSQL; SQLite
    has one writer at a time whatever the rows)."""
    mine = [b for b in batches if b.version == BASELINE]
    first, second = mine[::2], mine[1::2]
    registry.store_telemetry(first[:3], shard="a")  # "a" creates its rows
    done = threading.Event()
    if registry.db.engine.dialect.name == "postgresql":
        with registry.db.session() as session:
            rows = session.exec(
                select(TelemetryWindowAggregate).where(TelemetryWindowAggregate.shard == "a").with_for_update()
            ).all()
            assert rows
            writer = threading.Thread(target=lambda: (registry.store_telemetry(second, shard="b"), done.set()))
            writer.start()
            assert wait_until(done.is_set, 20), "worker b waited on worker a's rows"
        writer.join()
    else:
        registry.store_telemetry(second, shard="b")
    registry.store_telemetry(first, shard="a")
    with registry.db.session() as session:
        shards = {row.shard for row in session.exec(select(TelemetryWindowAggregate))}
    assert shards == {"a", "b"}
    windows = registry.windows.by_target(MODEL, BASELINE)
    assert len({(t, a.window_start) for t, a in windows}) < len(windows)  # windows both workers wrote to
    for target in {b.target for b in mine}:  # readers merge every row: together they hold each batch once
        merged = TelemetryAggregate()
        for _, agg in (w for w in windows if w[0] == target):
            merged.merge(agg)
        _same(merged, TelemetryAggregate.from_batches(b for b in mine if b.target == target))


def test_aggregates_written_before_shards_are_kept_as_the_lone_hubs_rows(database_url: str) -> None:
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0006")
            connection.execute(
                sqlalchemy.text(
                    "INSERT INTO telemetry_window_aggregate (model, version, target, window_start, window_s, "
                    "window_end, batches, requests, errors, offloaded, shadow_compared, shadow_agreed, latency_ms, "
                    "confidence, shadow_latency_ms, predictions, sketches, devices, updated_at) VALUES "
                    "('m', '1', 't', 0, 3600, 10, 2, 20, 0, 0, 0, 0, '{}', '{}', '{}', '{}', :empty, '[\"d\"]', 0)"
                ),
                {"empty": b""},
            )
    finally:
        engine.dispose()
    db = Database(database_url)  # upgrades to head
    try:
        with db.session() as session:
            query = select(TelemetryWindowAggregate).order_by(col(TelemetryWindowAggregate.id))
            row, marker = session.exec(query).all()
        assert (row.shard, row.cohort, row.batches, row.requests) == ("", "", 2, 20)
        assert (marker.cohort, marker.window_start) == ("*", 0)  # 0012: stored before label rows were kept
        assert [(a.batches, a.devices) for _, a in Registry(db).windows.by_target("m", "1")] == [(2, {"d"})]
    finally:
        db.close()


def test_device_window_rows_write_a_non_finite_total_as_json_dumps_does(registry: Registry) -> None:
    """Rows are written with msgspec's JSON, which has no infinity: such a row takes json.dumps (``Infinity``:
    SQLite keeps it, PostgreSQL refuses it, and the ingestor then refuses that batch alone)."""
    from hub.registry.device_windows import DeviceWindowSums, insert_device_windows
    from hub.registry.telemetry_tables import TelemetryDeviceWindow

    finite, infinite = DeviceWindowSums(), DeviceWindowSums()
    finite.latency_ms.add([1, 2], 3.5)
    infinite.latency_ms.add([1, 2], float("inf"))
    with registry.db.session() as session:
        insert_device_windows(session, {("m", "1.0", "t", 0.0, "dev-a"): finite})
    if registry.db.engine.dialect.name == "postgresql":
        import psycopg

        with pytest.raises(psycopg.errors.InvalidTextRepresentation), registry.db.session() as session:
            insert_device_windows(session, {("m", "1.0", "t", 0.0, "dev-b"): infinite})
    else:
        with registry.db.session() as session:
            insert_device_windows(session, {("m", "1.0", "t", 0.0, "dev-b"): infinite})
    with registry.db.session() as session:
        rows = {r.device_id: r.histograms for r in session.exec(select(TelemetryDeviceWindow))}
    assert rows["dev-a"] == {"latency_ms": [[1, 2], 3.5], "confidence": [], "predictions": {}, "shadow": {}}
    if registry.db.engine.dialect.name != "postgresql":
        assert rows["dev-b"]["latency_ms"] == [[1, 2], float("inf")]


def test_a_writer_folds_into_rows_it_wrote_without_reading_them_and_reads_rows_another_changed(
    registry: Registry, batches: list[TelemetryBatch], database_url: str
) -> None:
    """The writer keeps the rows it wrote deserialised (`WindowFolds`); another writer of the same shard (its own
    registry) changing them in between makes it read them again, and every batch is counted once."""
    mine = [b for b in batches if b.version == BASELINE]
    groups: dict[tuple[str, float], list[TelemetryBatch]] = {}
    for b in mine:
        groups.setdefault((b.target, b.window_start // 60.0), []).append(b)
    parts = [[b for group in groups.values() for b in group[i::4]] for i in range(4)]
    assert all(len(group) >= 4 for group in groups.values())  # each part touches every row
    other_db = Database(database_url)
    try:
        registry.store_telemetry(parts[0], aggregate_window_s=60.0)
        assert registry.folds.reads == len(groups)
        registry.store_telemetry(parts[1], aggregate_window_s=60.0)
        assert registry.folds.reads == len(groups)  # its own rows: merged in memory, no read
        Registry(other_db).store_telemetry(parts[2], aggregate_window_s=60.0)
        registry.store_telemetry(parts[3] + parts[2][:2], aggregate_window_s=60.0)  # duplicates add nothing
        assert registry.folds.reads == 2 * len(groups)  # changed by the other writer: read again
    finally:
        other_db.close()
    windows = registry.windows.by_target(MODEL, BASELINE)
    assert len(windows) == len(groups)
    for target in {b.target for b in mine}:
        merged = TelemetryAggregate()
        for _, agg in (w for w in windows if w[0] == target):
            merged.merge(agg)
        _same(merged, TelemetryAggregate.from_batches(b for b in mine if b.target == target))
