"""Reading and pruning the window aggregates (`TelemetryWindowAggregate`, `TelemetryDeviceWindow`).

Drift by device class reads a version's aggregate rows with the ids of their devices (`by_target`), drift by
device label also the label rows of those windows (`by_label`); contract
violations and policies read the device rows of those windows (`device_rows`); canary analysis reads a model's
rows whose batches end in a time range, with every device row of those windows (`in_range`); retention deletes
the windows that started before a cut-off (`prune`), both tables together.

A time range ``[since, until]`` selects whole windows: those holding a batch whose window ends in it, as far as
the aggregate row's start and latest batch end tell.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, delete
from sqlalchemy import select as sa_select
from sqlmodel import col, func, select
from sqlmodel.sql.expression import SelectOfScalar

from fleet.telemetry import TelemetryAggregate
from hub.registry.db import Database
from hub.registry.telemetry_tables import (
    UNLABELLED_WINDOW,
    TelemetryDeviceWindow,
    TelemetryWindowAggregate,
    window_aggregate,
)

__all__ = ["DeviceWindowRow", "LabelWindows", "TelemetryWindows", "WindowsRead"]


DeviceWindowRow = Row[Any]
"""A `TelemetryDeviceWindow` row as read (its columns as attributes; no ORM object: thousands are read)."""


@dataclass(frozen=True)
class LabelWindows:
    """A version's aggregate rows of every batch as (target, aggregate with its devices), and the label rows of
    the same windows as (target, label key, label value, aggregate)."""

    targets: list[tuple[str, TelemetryAggregate]]
    labels: list[tuple[str, str, str, TelemetryAggregate]]
    complete: bool
    """False when a window was stored (in part) before label rows were kept: its label rows miss batches."""


@dataclass(frozen=True)
class WindowsRead:
    """A model's aggregate rows that hold a batch ending in a time range, and every device row of those
    windows (the ones outside the range too: together they name every device an aggregate row merged)."""

    aggregates: list[TelemetryWindowAggregate]
    devices: list[DeviceWindowRow]


def _version_rows(
    model: str, version: str, since: float | None = None, until: float | None = None
) -> SelectOfScalar[TelemetryWindowAggregate]:
    return (
        select(TelemetryWindowAggregate)
        .where(
            TelemetryWindowAggregate.model == model,
            TelemetryWindowAggregate.version == version,
            TelemetryWindowAggregate.cohort == "",
            *_in_time_range(since, until),
        )
        .order_by(col(TelemetryWindowAggregate.window_start), col(TelemetryWindowAggregate.target))
    )


def _in_time_range(since: float | None, until: float | None) -> list[ColumnElement[bool]]:
    """Conditions on aggregate rows holding a batch whose window ends in ``[since, until]`` (as far as the
    row's start and latest batch end tell)."""
    conditions = []
    if since is not None:
        conditions.append(col(TelemetryWindowAggregate.window_end) >= since)
    if until is not None:
        conditions.append(col(TelemetryWindowAggregate.window_start) <= until)
    return conditions


class TelemetryWindows:
    """The window aggregates of stored telemetry: read for reports, pruned for retention."""

    def __init__(self, database: Database) -> None:
        self.db = database

    def rows(self, model: str, version: str) -> list[TelemetryWindowAggregate]:
        """Aggregate rows of one model version, oldest window first."""
        with self.db.session() as session:
            return list(session.exec(_version_rows(model, version)))

    def device_counts(self, model: str, version: str) -> dict[tuple[str, float], int]:
        """Distinct devices of each aggregate row of one model version, by (target, window start)."""
        t = TelemetryDeviceWindow
        query = (
            select(t.target, t.window_start, func.count(func.distinct(t.device_id)))
            .where(t.model == model, t.version == version)
            .group_by(col(t.target), col(t.window_start))
        )
        with self.db.session() as session:
            return {(target, start): int(n) for target, start, n in session.exec(query)}

    def by_target(
        self, model: str, version: str, since: float | None = None, until: float | None = None
    ) -> list[tuple[str, TelemetryAggregate]]:
        """The aggregate rows of one model version (whole windows in ``[since, until]`` when given) as
        (target, aggregate), its ``devices`` filled in."""
        t = TelemetryDeviceWindow
        members = select(t.target, t.window_start, t.device_id).where(t.model == model, t.version == version)
        devices: dict[tuple[str, float], set[str]] = {}
        with self.db.session() as session:
            rows = list(session.exec(_version_rows(model, version, since, until)))
            if not rows:
                return []
            if since is not None or until is not None:
                members = members.where(col(t.window_start).between(rows[0].window_start, rows[-1].window_start))
            for target, start, device_id in session.exec(members):
                devices.setdefault((target, start), set()).add(device_id)
        out = []
        for row in rows:
            agg = window_aggregate(row)
            agg.devices = devices.get((row.target, row.window_start), set())
            out.append((row.target, agg))
        return out

    def by_label(
        self, model: str, version: str, keys: Iterable[str], since: float | None = None, until: float | None = None
    ) -> LabelWindows:
        """The version's aggregate rows of every batch (whole windows in ``[since, until]`` when given) as
        `by_target` reads them, and the label rows (cohort ``key=value``, ``key`` in ``keys``) of the same
        windows as (target, key, value, aggregate), their ``devices`` left empty; ``complete`` is False when one
        of those windows was stored before label rows were kept (migration 0012 marked it)."""
        targets = self.by_target(model, version, since, until)
        wanted = set(keys)
        if not targets or not wanted:
            return LabelWindows(targets, [], True)
        windows = {(target, agg.window_start) for target, agg in targets}
        starts = [start for _, start in windows]
        a = TelemetryWindowAggregate
        query = (
            select(a)
            .where(
                a.model == model,
                a.version == version,
                a.cohort != "",
                col(a.window_start).between(min(starts), max(starts)),
            )
            .order_by(col(a.window_start), col(a.target), col(a.cohort))
        )
        labels = []
        complete = True
        with self.db.session() as session:
            for row in session.exec(query):
                if (row.target, row.window_start) not in windows:
                    continue
                if row.cohort == UNLABELLED_WINDOW:
                    complete = False
                    continue
                key, _, value = row.cohort.partition("=")
                if key in wanted:
                    labels.append((row.target, key, value, window_aggregate(row)))
        return LabelWindows(targets, labels, complete)

    def device_rows(
        self, model: str, version: str, since: float | None = None, until: float | None = None
    ) -> list[DeviceWindowRow]:
        """The device rows of one model version's aggregate windows (whole windows in ``[since, until]`` when
        given), several per device and window until compaction merges them."""
        a = TelemetryWindowAggregate
        windows = select(a.target, a.window_start).where(
            a.model == model, a.version == version, a.cohort == "", *_in_time_range(since, until)
        )
        table = TelemetryDeviceWindow.__table__  # type: ignore[attr-defined]
        with self.db.session() as session:
            keys = {(target, start) for target, start in session.exec(windows)}
            if not keys:
                return []
            starts = [start for _, start in keys]
            members = sa_select(table).where(
                table.c.model == model,
                table.c.version == version,
                table.c.window_start.between(min(starts), max(starts)),
            )
            rows = session.connection().execute(members)
            return [row for row in rows if (row.target, row.window_start) in keys]

    def in_range(self, model: str, since: float | None = None, until: float | None = None) -> WindowsRead:
        """The model's aggregate rows holding a batch whose window ends in ``[since, until]`` (as far as their
        earliest start and latest end tell), and every device row of the windows they span."""
        query = select(TelemetryWindowAggregate).where(
            TelemetryWindowAggregate.model == model,
            TelemetryWindowAggregate.cohort == "",
            *_in_time_range(since, until),
        )
        with self.db.session() as session:
            aggregates = list(session.exec(query))
            if not aggregates:
                return WindowsRead([], [])
            starts = [row.window_start for row in aggregates]
            table = TelemetryDeviceWindow.__table__  # type: ignore[attr-defined]
            members = sa_select(table).where(
                table.c.model == model, table.c.window_start.between(min(starts), max(starts))
            )
            return WindowsRead(aggregates, list(session.connection().execute(members)))

    def prune(self, started_before: float, *, chunk: int = 5000) -> int:
        """Delete the windows that started before ``started_before`` (aggregate and device rows, a chunk per
        transaction); return how many aggregate rows went."""
        for table in (TelemetryDeviceWindow, TelemetryWindowAggregate):
            removed = self._delete_chunks(table, started_before, chunk)
        return removed

    def _delete_chunks(
        self, table: type[TelemetryDeviceWindow] | type[TelemetryWindowAggregate], started_before: float, chunk: int
    ) -> int:
        removed = 0
        while True:
            with self.db.session() as session:
                ids = select(table.id).where(col(table.window_start) < started_before).limit(chunk)
                statement = delete(table).where(col(table.id).in_(ids.scalar_subquery()))
                count = session.connection().execute(statement).rowcount
            removed += count
            if count < chunk:
                return removed
