"""Label cohort rows of the window aggregates: each batch of a labelled device also folds into one row per label
of its device, as labelled at ingestion, exactly once; the labels come from a refreshed cache; windows stored
before migration 0012 are marked, and reports by label over them read the batches. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy
from alembic import command
from sqlmodel import col, select

from fleet.telemetry import ReferenceProfile
from fleet.wire.messages import TelemetryBatch
from hub.monitoring.queries import drift_report, drift_report_for
from hub.monitoring.registry_source import RegistrySource
from hub.registry import Database, Registry, TelemetryWindowAggregate
from hub.registry.label_cache import DeviceLabelCache
from hub.registry.migrations import alembic_config
from tests.hub.monitoring.telemetry_scenario import BASELINE, MODEL, add_scenario_devices, scenario


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    db = Database(database_url)
    yield Registry(db)
    db.close()


def _batches_by_cohort(registry: Registry) -> dict[tuple[str, float, str], int]:
    a = TelemetryWindowAggregate
    with registry.db.session() as session:
        rows = session.exec(select(a.target, a.window_start, a.cohort, a.batches)).all()
    out: dict[tuple[str, float, str], int] = {}
    for target, start, cohort, batches in rows:
        out[(target, start, cohort)] = out.get((target, start, cohort), 0) + batches
    return out


def test_labelled_batches_fold_once_per_label_as_labelled_when_stored(registry: Registry) -> None:
    batches = [TelemetryBatch.model_validate(b) for b in scenario()["batches"]]
    mine = [b for b in batches if b.device_id in ("rpi-10", "rpi-11", "jet-05")]
    add_scenario_devices(
        registry, {"rpi-10": {"region": "eu", "tier": "edge"}, "rpi-11": {}, "jet-05": {"region": "us"}}
    )
    first = [b for b in mine if b.window_start == 1000.0]
    assert len(registry.store_telemetry(first, aggregate_window_s=60.0)) == 3
    assert registry.store_telemetry(first, aggregate_window_s=60.0) == []  # stored once, folded once
    registry.set_device_labels("rpi-10", {"region": "us"}, remove=["tier"])
    later = [b for b in mine if b.window_start == 1060.0]
    registry.store_telemetry(later, aggregate_window_s=60.0)
    rpi, jet = "rpi4-arm64", "jetson-orin"
    assert _batches_by_cohort(registry) == {
        (rpi, 960.0, ""): 2,
        (rpi, 960.0, "region=eu"): 1,
        (rpi, 960.0, "tier=edge"): 1,
        (jet, 960.0, ""): 1,
        (jet, 960.0, "region=us"): 1,
        (rpi, 1020.0, ""): 2,
        (rpi, 1020.0, "region=us"): 1,  # relabelled: the earlier window stays in region=eu
        (jet, 1020.0, ""): 1,
        (jet, 1020.0, "region=us"): 1,
    }
    # the rows of every batch are what the target readers see: the label rows are not counted twice
    assert sum(a.batches for _, a in registry.windows.by_target(MODEL, BASELINE)) == 6


def test_device_labels_are_read_once_per_refresh_and_again_after_a_change(database_url: str) -> None:
    db = Database(database_url)
    try:
        now = [0.0]
        cache = DeviceLabelCache(db, refresh_s=30.0, clock=lambda: now[0])
        registry = Registry(db)
        add_scenario_devices(registry, {"a": {"region": "eu"}, "b": {}})
        assert cache.labels() == {"a": {"region": "eu"}}  # unlabelled devices are left out
        registry.set_device_labels("b", {"region": "us"})
        assert cache.labels() == {"a": {"region": "eu"}} and cache.reads == 1  # another registry's change
        now[0] = 30.0
        assert cache.labels() == {"a": {"region": "eu"}, "b": {"region": "us"}} and cache.reads == 2
        cache.invalidate()
        cache.labels()
        assert cache.reads == 3
    finally:
        db.close()


def test_windows_stored_before_label_rows_are_marked_and_reports_by_label_read_their_batches(
    database_url: str,
) -> None:
    dump = scenario(jetson_shift=1.0)
    reference = ReferenceProfile.model_validate(dump["reference"])
    db = Database(database_url)
    try:
        registry = Registry(db)
        add_scenario_devices(registry, dump["labels"])
        registry.store_telemetry([TelemetryBatch.model_validate(b) for b in dump["batches"]])
    finally:
        db.close()
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.begin() as connection:  # as revision 0011 stored them: no label rows
            command.downgrade(alembic_config(connection), "0011")
    finally:
        engine.dispose()
    db = Database(database_url)  # upgrades to head
    try:
        assert db.migration.from_revision == "0011"
        registry = Registry(db)
        cohorts = {c for (_, _, c) in _batches_by_cohort(registry)}
        assert cohorts == {"", "*"}
        assert not registry.windows.by_label(MODEL, BASELINE, {"region"}).complete
        source = RegistrySource(registry, reference=lambda _m, _v: reference)
        from_batches = drift_report(
            reference,
            registry.telemetry_batches(MODEL, BASELINE),
            model=MODEL,
            version=BASELINE,
            by=["label:region"],
            device_labels=dump["labels"],
        )
        report = drift_report_for(source, MODEL, BASELINE, by=["label:region"])
        assert [(c.cohort, c.devices, c.requests, [f.drifted for f in c.features]) for c in report.cohorts] == [
            (c.cohort, c.devices, c.requests, [f.drifted for f in c.features]) for c in from_batches.cohorts
        ]
        registry.prune_telemetry(aggregate_max_age_s=0.0, now=10_000.0)  # retention takes the markers too
        with db.session() as session:
            assert session.exec(select(col(TelemetryWindowAggregate.id))).all() == []
    finally:
        db.close()
