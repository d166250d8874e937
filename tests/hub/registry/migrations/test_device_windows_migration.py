"""Migration 0007 on real data of revision 0006, on SQLite and PostgreSQL: raw batches of both formats, window
aggregates with device id lists (some of their batches since pruned), rollups (one of a window the aggregates
also hold, one older). After the upgrade the readers answer as before, from the aggregates."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy
from alembic import command

from fleet.telemetry import ReferenceProfile, TelemetryAggregate
from fleet.wire.messages import TelemetryBatch
from hub.monitoring.queries import (
    RolloutView,
    canary_report,
    canary_report_for,
    drift_report,
    drift_report_for,
    split_rollout_batches,
)
from hub.monitoring.registry_source import RegistrySource
from hub.registry import Database, Registry
from hub.registry.migrations import alembic_config
from hub.registry.telemetry_tables import pack_sketches
from tests.hub.monitoring.telemetry_scenario import BASELINE, CANARY, MODEL, scenario

WINDOW_S = 60.0  # the scenario's batch windows: 1000-1060, 1060-1120, 1120-1180


def _histogram(acc: Any) -> dict[str, Any]:
    return acc.to_histogram().model_dump(mode="json") if acc.edges else {}


def _record(batch: TelemetryBatch, *, packed: bool) -> dict[str, Any]:
    """A telemetryrecord row as revision 0006 wrote it (``packed``) or as earlier revisions did."""
    row = {
        "batch_id": batch.batch_id,
        "device_id": batch.device_id,
        "target": batch.target,
        "model": batch.model,
        "version": batch.version,
        "window_start": batch.window_start,
        "window_end": batch.window_end,
        "requests": batch.requests,
        "errors": batch.errors,
        "received_at": 0.0,
    }
    if not packed:
        return row | {"payload": batch.model_dump(mode="json"), "sketches": None}
    sketches = {name: base64.b64decode(text) for name, text in batch.feature_sketches.items()}
    return row | {
        "payload": batch.model_dump(mode="json", exclude={"feature_sketches"}),
        "sketches": pack_sketches(sketches),
    }


def _grouped(batches: Iterable[TelemetryBatch]) -> dict[tuple[str, str, str, float], list[TelemetryBatch]]:
    out: dict[tuple[str, str, str, float], list[TelemetryBatch]] = {}
    for b in batches:
        out.setdefault((b.model, b.version, b.target, (b.window_start // WINDOW_S) * WINDOW_S), []).append(b)
    return out


def _summary(key: tuple[str, str, str, float], members: list[TelemetryBatch]) -> dict[str, Any]:
    """The columns a window aggregate (0006) and a rollup share, of ``members``."""
    agg = TelemetryAggregate.from_batches(members)
    model, version, target, start = key
    return {
        "model": model,
        "version": version,
        "target": target,
        "window_start": start,
        "window_s": WINDOW_S,
        "batches": agg.batches,
        "requests": agg.requests,
        "errors": agg.errors,
        "offloaded": agg.offloaded,
        "shadow_compared": agg.shadow_compared,
        "shadow_agreed": agg.shadow_agreed,
        "latency_ms": _histogram(agg.latency_ms),
        "confidence": _histogram(agg.confidence),
        "predictions": dict(agg.predictions),
        "devices": sorted(agg.devices),
        "updated_at": 0.0,
    }


def _aggregate(key: tuple[str, str, str, float], members: list[TelemetryBatch]) -> dict[str, Any]:
    agg = TelemetryAggregate.from_batches(members)
    sketches = {name: sk.serialize() for name, sk in sorted(agg.sketches.items())}
    return _summary(key, members) | {
        "window_end": agg.window_end,
        "shadow_latency_ms": _histogram(agg.shadow_latency_ms),
        "sketches": pack_sketches(sketches),
    }


def _rollup(key: tuple[str, str, str, float], members: list[TelemetryBatch]) -> dict[str, Any]:
    agg = TelemetryAggregate.from_batches(members)
    sketches = {name: base64.b64encode(sk.serialize()).decode("ascii") for name, sk in agg.sketches.items()}
    return _summary(key, members) | {"feature_sketches": sketches}


def test_revision_0006_data_is_carried_over_and_the_readers_answer_as_before(database_url: str) -> None:
    dump = scenario(jetson_shift=1.0)
    batches = [TelemetryBatch.model_validate(b) for b in dump["batches"]]
    old_window = [  # an hour later, pruned into a rollup before revision 0006: no aggregate row
        TelemetryBatch.model_validate(b).model_copy(
            update={
                "batch_id": f"old-{b['batch_id']}",
                "window_start": b["window_start"] + 3600.0,
                "window_end": b["window_end"] + 3600.0,
            }
        )
        for b in scenario(seed=1)["batches"]
        if b["window_start"] == 1000.0
    ]
    first, second, third = ([b for b in batches if b.window_start == 1000.0 + 60 * w] for w in range(3))
    pruned = first[::2]  # stored and aggregated by 0006, then pruned (folded into a rollup too)
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0006")
        tables = sqlalchemy.MetaData()
        tables.reflect(engine)
        with engine.begin() as connection:
            records = [_record(b, packed=True) for b in first + second if b not in pruned]
            records += [_record(b, packed=False) for b in third]  # stored before 0006: never aggregated
            connection.execute(tables.tables["telemetryrecord"].insert(), records)
            aggregated = _grouped(first + second)
            connection.execute(
                tables.tables["telemetry_window_aggregate"].insert(),
                [_aggregate(key, members) for key, members in aggregated.items()],
            )
            rollups = [_rollup(key, members) for key, members in _grouped(pruned).items()]
            rollups += [_rollup(key, members) for key, members in _grouped(old_window).items()]
            connection.execute(tables.tables["telemetry_rollup"].insert(), rollups)
    finally:
        engine.dispose()

    retained = [b for b in batches if b not in pruned]
    # the canary's rpi devices from the second batch window on: jetson inputs are shifted, and a canary of both
    # classes would sit on the edge of input drift, where merging sketches in another order can tip it
    canary = [d for d in CANARY if d.startswith("rpi")]
    view = RolloutView.model_validate(dump["rollouts"]["ro-1"]).model_copy(
        update={"window_start": 1061.0, "canary_device_ids": canary}
    )
    before = canary_report(*split_rollout_batches(view, retained), candidate_version=view.candidate_version)
    reference = ReferenceProfile.model_validate(dump["reference"])
    everything = batches + old_window
    drift_before = drift_report(reference, everything, model=MODEL, version=BASELINE)

    db = Database(database_url)
    try:
        assert db.migration.from_revision == "0006"
        registry = Registry(db)
        assert sorted(b.batch_id for b in registry.telemetry_batches()) == sorted(b.batch_id for b in retained)
        source = RegistrySource(registry, reference=lambda _m, _v: reference, rollout=lambda _r: view)
        after = canary_report_for(source, "ro-1")
        assert after.model_dump(exclude={"metrics"}) == before.model_dump(exclude={"metrics"})
        assert [(m.metric, m.verdict, m.canary_value, m.p_value) for m in after.metrics] == [
            (m.metric, m.verdict, m.canary_value, m.p_value) for m in before.metrics
        ]
        drift = {c.cohort: c for c in drift_report_for(source, MODEL, BASELINE).cohorts}
        assert {n: (c.devices, c.requests, [f.drifted for f in c.features]) for n, c in drift.items()} == {
            c.cohort: (c.devices, c.requests, [f.drifted for f in c.features]) for c in drift_before.cohorts
        }
        rows = {(r.target, r.window_start): r for r in registry.windows.rows(MODEL, BASELINE)}
        devices = registry.windows.device_counts(MODEL, BASELINE)
        # every batch once: the rollup of a window the aggregates hold is not added again
        assert sum(r.batches for r in rows.values()) == sum(b.version == BASELINE for b in everything)
        for (_, version, target, start), members in _grouped(everything).items():
            if version == BASELINE:
                row = rows[(target, start)]
                key = (target, start)
                assert (row.batches, devices[key]) == (len(members), len({b.device_id for b in members}))
    finally:
        db.close()
    engine = sqlalchemy.create_engine(database_url)
    try:
        assert "telemetry_rollup" not in sqlalchemy.inspect(engine).get_table_names()
        with engine.begin() as connection:  # and back: device lists from the device rows, rollups empty
            command.downgrade(alembic_config(connection), "0006")
        with engine.connect() as connection:
            query = "SELECT target, window_start, devices FROM telemetry_window_aggregate WHERE version = '1.0'"
            lists = {
                (t, s): sorted(json.loads(d) if isinstance(d, str) else d)
                for t, s, d in connection.execute(sqlalchemy.text(query))
            }
            assert connection.execute(sqlalchemy.text("SELECT count(*) FROM telemetry_rollup")).scalar() == 0
    finally:
        engine.dispose()
    assert lists == {
        (target, start): sorted({b.device_id for b in members})
        for (_, version, target, start), members in _grouped(everything).items()
        if version == BASELINE
    }
