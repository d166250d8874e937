"""Folding a write's partial aggregates into the `TelemetryWindowAggregate` rows, in the write's transaction.

A fold reads the row locked, deserialises it (every sketch and histogram), merges the partial in and writes it
back: about 1 ms of CPU per row, paid by every write for every window row it touches. `WindowFolds` keeps what
it last wrote to each row, deserialised (its aggregate and the row's version: id, ``batches`` and
``updated_at``), so the next fold of that row merges into the kept aggregate and writes it back with an update
that only applies while the row is still at that version: no read, no deserialisation. A row changed or deleted
meanwhile (another writer sharing the shard, retention) updates nothing, and the fold reads the row as before. A
kept aggregate is taken out while a fold uses it and put back only once the transaction committed, so a write
that fails or is retried never leaves one that does not match the row.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Final

import sqlalchemy as sql
from sqlalchemy.engine import Connection

from fleet.telemetry import TelemetryAggregate
from hub.registry.telemetry_tables import TelemetryWindowAggregate, store_merged, window_aggregate

__all__ = ["WindowFolds", "WindowKey"]

WindowKey = tuple[str, str, str, float, str]
"""Model, version, target, window start and cohort ("" or a device label) of an aggregate row (with the writer's
shard, the row)."""

_AGGREGATES = TelemetryWindowAggregate.__table__  # type: ignore[attr-defined]
#: The window aggregate row a write folds into, locked; built once (building the clauses cost more than running them).
_AGGREGATE_ROW: Final = (
    sql.select(_AGGREGATES)
    .where(
        _AGGREGATES.c.model == sql.bindparam("model"),
        _AGGREGATES.c.version == sql.bindparam("version"),
        _AGGREGATES.c.target == sql.bindparam("target"),
        _AGGREGATES.c.window_start == sql.bindparam("start"),
        _AGGREGATES.c.shard == sql.bindparam("shard"),
        _AGGREGATES.c.cohort == sql.bindparam("cohort"),
    )
    .with_for_update()
)
#: What `store_merged` changes in a row.
_FOLDED_COLUMNS: Final = (
    "batches", "requests", "errors", "offloaded", "shadow_compared", "shadow_agreed", "window_end",
    "latency_ms", "confidence", "shadow_latency_ms", "predictions", "sketches", "updated_at",
)  # fmt: skip
#: What `store_merged` wrote to a row, applied only while the row is at the version read or last written.
_UPDATE_IF_UNCHANGED: Final = (
    sql.update(_AGGREGATES)
    .where(
        _AGGREGATES.c.id == sql.bindparam("row_id"),
        _AGGREGATES.c.batches == sql.bindparam("was_batches"),
        _AGGREGATES.c.updated_at == sql.bindparam("was_updated_at"),
    )
    .values({name: sql.bindparam(f"b_{name}") for name in _FOLDED_COLUMNS})
)
_INSERT_AGGREGATE: Final = sql.insert(_AGGREGATES).values(
    {
        name: sql.bindparam(f"b_{name}")
        for name in (*_FOLDED_COLUMNS, "model", "version", "target", "window_start", "window_s", "shard", "cohort")
    }
)
#: Rows kept deserialised at most (the oldest are dropped): a writer touches a few per write.
_MAX_KEPT: Final = 256


def _new_aggregate() -> dict[str, Any]:
    """A new window aggregate row's columns before its first fold."""
    return {
        "window_end": 0.0, "batches": 0, "requests": 0, "errors": 0, "offloaded": 0, "shadow_compared": 0,
        "shadow_agreed": 0, "latency_ms": {}, "confidence": {}, "shadow_latency_ms": {}, "predictions": {},
        "sketches": b"",
    }  # fmt: skip


@dataclass
class _Kept:
    """A row as this writer last wrote it: its columns (``row``, with ``id``) and its aggregate deserialised."""

    row: SimpleNamespace
    merged: TelemetryAggregate


class WindowFolds:
    """Folds partial aggregates into window aggregate rows (thread-safe), keeping the rows it wrote
    deserialised (see the module docstring)."""

    def __init__(self) -> None:
        self._kept: dict[tuple[WindowKey, str], _Kept] = {}
        self._lock = threading.Lock()
        self.reads = 0
        """Folds that had to read their row (the first of a row, or one changed by another writer)."""

    @contextmanager
    def transaction(self) -> Iterator[dict[tuple[WindowKey, str], _Kept]]:
        """What folds in one transaction keep; kept only when the block ends without an exception (call it
        around the transaction's commit)."""
        staged: dict[tuple[WindowKey, str], _Kept] = {}
        yield staged
        with self._lock:
            self._kept.update(staged)
            while len(self._kept) > _MAX_KEPT:
                del self._kept[next(iter(self._kept))]

    def fold(
        self,
        connection: Connection,
        staged: dict[tuple[WindowKey, str], _Kept],
        key: WindowKey,
        shard: str,
        window_s: float,
        partial: TelemetryAggregate,
    ) -> None:
        """Merge ``partial`` into the row of ``key`` and ``shard`` (created when missing) in ``connection``'s
        transaction; what was written goes to ``staged`` (`transaction`)."""
        with self._lock:
            kept = self._kept.pop((key, shard), None)
        if kept is not None:
            kept.merged.merge(partial)
            if self._write(connection, kept.row, kept.merged, partial):
                staged[(key, shard)] = kept
                return
        self.reads += 1
        model, version, target, start, cohort = key
        identity = {"model": model, "version": version, "target": target, "shard": shard, "cohort": cohort}
        stored = connection.execute(_AGGREGATE_ROW, {**identity, "start": start}).first()
        if stored is not None:
            row = SimpleNamespace(**stored._asdict())
        else:
            row = SimpleNamespace(**_new_aggregate(), **identity, window_start=start, window_s=window_s, id=None)
        merged = window_aggregate(row)
        merged.merge(partial)
        if stored is not None:
            if not self._write(connection, row, merged, partial):  # locked by the read: it cannot have moved
                raise RuntimeError(f"window aggregate row {row.id} changed under its lock")
        else:  # a row another worker created meanwhile fails here: the transaction is retried
            merged.devices.clear()
            store_merged(row, merged, partial)
            identity_columns = ("model", "version", "target", "window_start", "window_s", "shard", "cohort")
            values = _bound(row) | {f"b_{name}": getattr(row, name) for name in identity_columns}
            row.id = connection.execute(_INSERT_AGGREGATE.returning(_AGGREGATES.c.id), values).scalar_one()
        staged[(key, shard)] = _Kept(row, merged)

    @staticmethod
    def _write(connection: Connection, row: SimpleNamespace, merged: TelemetryAggregate, partial: Any) -> bool:
        """Store ``merged`` in ``row`` and update it if it is still at the version ``row`` held; whether it was."""
        was = {"row_id": row.id, "was_batches": row.batches, "was_updated_at": row.updated_at}
        merged.devices.clear()  # the device ids are in the window's device rows, not kept here
        store_merged(row, merged, partial)
        return bool(connection.execute(_UPDATE_IF_UNCHANGED, {**_bound(row), **was}).rowcount == 1)

    def forget(self) -> None:
        """Drop every kept row (the next fold of each reads it)."""
        with self._lock:
            self._kept.clear()


def _bound(row: SimpleNamespace) -> dict[str, Any]:
    return {f"b_{name}": getattr(row, name) for name in _FOLDED_COLUMNS}
