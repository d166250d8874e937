"""Telemetry retention (Registry.prune_telemetry, the ingestor's RetentionPolicy) on SQLite and PostgreSQL: raw
batches go by age and count while the window aggregates keep them; aggregates go by age; with the clock moved
over months, every telemetry table stays bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlmodel import func, select

from fleet.wire.messages import TelemetryBatch
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS, HistogramAccumulator
from hub.monitoring.ingest import RetentionPolicy, TelemetryIngestor
from hub.monitoring.queries import RolloutView, canary_report_for
from hub.monitoring.registry_source import RegistrySource
from hub.registry import Database, Registry, TelemetryDeviceWindow, TelemetryRecord, TelemetryWindowAggregate
from hub.registry.device_windows import compact_device_windows
from tests.hub.monitoring.telemetry_scenario import BASELINE, CANDIDATE, MODEL, scenario

DAY = 24 * 3600.0


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    db = Database(database_url)
    yield Registry(db)
    db.close()


@pytest.fixture(scope="module")
def dump() -> dict[str, object]:
    return scenario()


def _batches(dump: dict[str, object]) -> list[TelemetryBatch]:
    return [TelemetryBatch.model_validate(b) for b in dump["batches"]]  # type: ignore[attr-defined]


def _rows(registry: Registry) -> tuple[int, int, int]:
    """Raw batches, aggregate rows and device window rows stored."""
    with registry.db.session() as session:
        return tuple(  # type: ignore[return-value]
            int(session.exec(select(func.count()).select_from(table)).one())
            for table in (TelemetryRecord, TelemetryWindowAggregate, TelemetryDeviceWindow)
        )


def _aggregated(registry: Registry) -> int:
    return sum(r.batches for version in (BASELINE, CANDIDATE) for r in registry.windows.rows(MODEL, version))


def test_raw_batches_go_by_age_and_count_and_reports_still_read_them_in_the_aggregates(
    registry: Registry, dump: dict[str, object]
) -> None:
    batches = _batches(dump)
    registry.store_telemetry(batches, aggregate_window_s=60.0)
    view = RolloutView.model_validate(dump["rollouts"]["ro-1"])  # type: ignore[index]
    source = RegistrySource(registry, rollout=lambda _r: view)
    before, windows = canary_report_for(source, "ro-1"), _rows(registry)[1:]
    # scenario windows: 1000-1060, 1060-1120, 1120-1180 (epoch seconds), 30 devices, 2 versions
    now = 1061.0 + 100.0  # max age 100 s: the first window (ending at 1060) is older
    assert registry.prune_telemetry(max_age_s=100.0, now=now, chunk=7) == 30
    assert registry.prune_telemetry(max_age_s=100.0, now=now) == 0
    assert registry.prune_telemetry(max_rows=20, now=now) == len(batches) - 30 - 20
    assert {b.window_end for b in registry.telemetry_batches()} == {1180.0}  # the oldest went first
    assert _rows(registry) == (20, *windows) and _aggregated(registry) == len(batches)
    assert canary_report_for(source, "ro-1") == before


def test_pruning_merges_the_device_rows_each_write_added(registry: Registry, dump: dict[str, object]) -> None:
    """One write per batch window, all in one aggregate window: three rows per device until pruning merges
    them into one; reports read the same before and after."""
    batches = _batches(dump)
    for start in (1000.0, 1060.0, 1120.0):
        registry.store_telemetry([b for b in batches if b.window_start == start])
    view = RolloutView.model_validate(dump["rollouts"]["ro-1"])  # type: ignore[index]
    source = RegistrySource(registry, rollout=lambda _r: view)
    before, devices = canary_report_for(source, "ro-1"), len({b.device_id for b in batches})
    assert _rows(registry) == (len(batches), 4, 3 * devices)  # 2 versions x 2 targets, one window
    assert registry.prune_telemetry() == 0
    assert _rows(registry) == (len(batches), 4, devices)
    assert canary_report_for(source, "ro-1") == before
    assert registry.windows.device_counts(MODEL, BASELINE) == {
        (t, 0.0): len({b.device_id for b in batches if (b.target, b.version) == (t, BASELINE)})
        for t in ("rpi4-arm64", "jetson-orin")
    }


def test_workers_compacting_at_once_merge_each_row_once(database_url: str, dump: dict[str, object]) -> None:
    batches = _batches(dump)
    workers = [Registry(Database(database_url)) for _ in range(2)]
    try:
        for start in (1000.0, 1060.0, 1120.0):
            workers[0].store_telemetry([b for b in batches if b.window_start == start])
        barrier = threading.Barrier(2)

        def compact(registry: Registry) -> None:
            barrier.wait()
            compact_device_windows(registry.db, chunk=7)

        threads = [threading.Thread(target=compact, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        with workers[0].db.session() as session:
            rows = list(session.exec(select(TelemetryDeviceWindow)))
    finally:
        for w in workers:
            w.db.close()
    devices = {b.device_id for b in batches}
    assert all(r.compacted for r in rows) and len(devices) <= len(rows) <= 2 * len(devices)
    assert sum(r.requests for r in rows) == sum(b.requests for b in batches)
    assert sum(r.batches for r in rows) == len(batches)


def test_the_ingestor_prunes_on_its_interval(registry: Registry, dump: dict[str, object]) -> None:
    policy = RetentionPolicy(max_age_s=None, max_rows=10, aggregate_max_age_s=None, interval_s=0.05)
    ingestor = TelemetryIngestor(registry, linger_s=0.01, retention=policy)
    try:
        for batch in _batches(dump)[:25]:
            ingestor.submit(batch)
        assert ingestor.wait_stored(25)
        assert ingestor.prune() + ingestor.pruned >= 15  # the writer may have pruned already
    finally:
        ingestor.close()
    assert registry.telemetry_count() == 10 and _aggregated(registry) == 25


def _batch(device_id: str, target: str, now: float) -> TelemetryBatch:
    return TelemetryBatch(
        batch_id=f"{device_id}-{now:.0f}",
        device_id=device_id,
        target=target,
        model=MODEL,
        version=BASELINE,
        window_start=now - 60.0,
        window_end=now,
        requests=10,
        errors=0,
        latency_ms=HistogramAccumulator(LATENCY_BUCKETS_MS).to_histogram(),
        confidence=HistogramAccumulator(CONFIDENCE_BUCKETS).to_histogram(),
    )


def test_over_months_every_telemetry_table_stays_bounded(registry: Registry) -> None:
    """Batches every 5 days for 5 months, daily aggregate windows, raw kept 7 days and aggregates 30."""
    fleet = [("rpi-0", "rpi4-arm64"), ("rpi-1", "rpi4-arm64"), ("jet-0", "jetson-orin")]
    policy = RetentionPolicy(max_age_s=7 * DAY, max_rows=None, aggregate_max_age_s=30 * DAY, interval_s=0)
    ingestor = TelemetryIngestor(registry, retention=policy)
    counts = []
    try:
        with time_machine.travel(datetime(2027, 1, 1, tzinfo=UTC), tick=False) as traveller:
            for _ in range(30):
                now = time.time()
                registry.store_telemetry([_batch(d, t, now) for d, t in fleet], aggregate_window_s=DAY)
                ingestor.prune()
                counts.append(_rows(registry))
                traveller.shift(timedelta(days=5))
    finally:
        ingestor.close()
    # raw: this step's and the last one's (5 days old); aggregate windows (each starts a day before its step):
    # the last 6 steps', 2 targets and 3 devices each
    assert max(counts) == counts[-1] == counts[len(counts) // 2] == (6, 2 * 6, 3 * 6)
    assert counts[5] == (6, 2 * 6, 3 * 6) and counts[4] == (6, 2 * 5, 3 * 5)  # grew, then held
