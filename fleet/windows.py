"""Maintenance windows: when a rollout may send new deployments. All times are UTC, all functions pure.

Two kinds, chosen by ``type`` in config::

    {"type": "daily", "start": "02:00", "end": "04:30"}                 every day, may wrap midnight
    {"type": "cron", "cron": "0 1 * * 1-5", "duration_minutes": 180}    opens at each cron match

Cron expressions have the five classic fields (minute hour day-of-month month day-of-week, Sunday = 0 or 7)
with ``*``, lists, ranges and steps; like cron, when both day fields are restricted either may match.
Invalid windows raise pydantic's ``ValidationError`` (a ``ValueError``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_SEARCH_MINUTES = 8 * 24 * 60 + 1  # next_start looks this far ahead (a weekly cron always matches)


def _minutes(hhmm: str) -> int:
    match = _HHMM.match(hhmm)
    if not match:
        raise ValueError(f"time {hhmm!r} is not HH:MM (24-hour, UTC)")
    return int(match.group(1)) * 60 + int(match.group(2))


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class DailyWindow(BaseModel):
    """Open every day from ``start`` to ``end`` (UTC, ``HH:MM``); wraps midnight when ``end < start``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["daily"] = "daily"
    start: str
    end: str

    @model_validator(mode="after")
    def _check(self) -> DailyWindow:
        if _minutes(self.start) == _minutes(self.end):
            raise ValueError("daily window start and end are equal; omit windows to allow any time")
        return self

    def contains(self, now: float) -> bool:
        """Whether ``now`` (epoch seconds) falls inside the window."""
        moment = _utc(now)
        minute = moment.hour * 60 + moment.minute
        start, end = _minutes(self.start), _minutes(self.end)
        return start <= minute < end if start < end else minute >= start or minute < end

    def next_start(self, now: float) -> float:
        """Epoch seconds of the next opening strictly after ``now``."""
        moment = _utc(now)
        start = _minutes(self.start)
        opening = moment.replace(hour=start // 60, minute=start % 60, second=0, microsecond=0)
        if opening <= moment:
            opening += timedelta(days=1)
        return opening.timestamp()


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?", part)
        if not match:
            raise ValueError(f"cron {name} field {text!r}: cannot parse {part!r}")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"cron {name} field {text!r}: step must be at least 1")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(x) for x in span.split("-"))
        else:
            first = int(span)
            last = high if step_text else first
        if not (low <= first <= last <= high):
            raise ValueError(f"cron {name} field {text!r}: {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


class CronWindow(BaseModel):
    """Opens at every match of a five-field ``cron`` expression and stays open ``duration_minutes``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["cron"] = "cron"
    cron: str
    duration_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)]

    @field_validator("cron")
    @classmethod
    def _valid(cls, value: str) -> str:
        _CronSpec.parse(value)
        return " ".join(value.split())

    def contains(self, now: float) -> bool:
        """Whether a window opened by a match in the last ``duration_minutes`` minutes is still open."""
        spec = _CronSpec.parse(self.cron)
        minute = _utc(now).replace(second=0, microsecond=0)
        return any(spec.matches(minute - timedelta(minutes=back)) for back in range(self.duration_minutes))

    def next_start(self, now: float) -> float | None:
        """Epoch seconds of the next match strictly after ``now``, or None if none within eight days."""
        spec = _CronSpec.parse(self.cron)
        minute = _utc(now).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for ahead in range(_SEARCH_MINUTES):
            candidate = minute + timedelta(minutes=ahead)
            if spec.matches(candidate):
                return candidate.timestamp()
        return None


@dataclass(frozen=True, slots=True)
class _CronSpec:
    """Parsed cron fields."""

    minute: frozenset[int]
    hour: frozenset[int]
    dom: frozenset[int]
    month: frozenset[int]
    dow: frozenset[int]
    dom_any: bool
    dow_any: bool

    @staticmethod
    @lru_cache(maxsize=256)
    def parse(text: str) -> _CronSpec:
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(f"cron expression {text!r} needs 5 fields (minute hour dom month dow)")
        parsed = [_parse_field(f, *meta) for f, meta in zip(fields, _FIELDS, strict=True)]
        dow = frozenset(d % 7 for d in parsed[4])
        # like Vixie cron: a day field starting with '*' does not restrict, so the other one decides
        return _CronSpec(
            parsed[0],
            parsed[1],
            parsed[2],
            parsed[3],
            dow,
            fields[2].startswith("*"),
            fields[4].startswith("*"),
        )

    def matches(self, moment: datetime) -> bool:
        if moment.minute not in self.minute or moment.hour not in self.hour or moment.month not in self.month:
            return False
        dom_ok = moment.day in self.dom
        dow_ok = (moment.weekday() + 1) % 7 in self.dow
        if self.dom_any or self.dow_any:
            return dom_ok and dow_ok
        return dom_ok or dow_ok


MaintenanceWindow = Annotated[DailyWindow | CronWindow, Field(discriminator="type")]


def in_window(windows: Sequence[DailyWindow | CronWindow], now: float) -> bool:
    """Whether ``now`` is inside any window; no windows at all means always open."""
    return not windows or any(w.contains(now) for w in windows)


def next_opening(windows: Sequence[DailyWindow | CronWindow], now: float) -> float | None:
    """The earliest opening of any window after ``now`` (None if there are no windows or none soon)."""
    starts = [s for s in (w.next_start(now) for w in windows) if s is not None]
    return min(starts) if starts else None
