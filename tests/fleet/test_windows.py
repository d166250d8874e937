"""Maintenance windows: daily UTC windows and cron-opened windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from fleet.windows import CronWindow, DailyWindow, MaintenanceWindow, in_window, next_opening


def at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC).timestamp()  # 2026-03-02 is a Monday


def test_daily_window_and_midnight_wrap() -> None:
    night = DailyWindow(start="23:00", end="02:00")
    assert night.contains(at(2, 23, 30)) and night.contains(at(3, 1, 59))
    assert not night.contains(at(3, 2, 0)) and not night.contains(at(2, 12))
    assert night.next_start(at(2, 12)) == at(2, 23)
    assert night.next_start(at(2, 23, 30)) == at(3, 23)
    day = DailyWindow(start="09:00", end="17:00")
    assert day.contains(at(2, 9)) and not day.contains(at(2, 17))


def test_cron_window_opens_at_matches_for_its_duration() -> None:
    weekday_nights = CronWindow(cron="0 1 * * 1-5", duration_minutes=120)
    assert weekday_nights.contains(at(2, 1)) and weekday_nights.contains(at(2, 2, 59))
    assert not weekday_nights.contains(at(2, 3)) and not weekday_nights.contains(at(2, 0, 59))
    assert not weekday_nights.contains(at(7, 1, 30))  # Saturday
    assert weekday_nights.next_start(at(6, 12)) == at(9, 1)  # Friday noon -> Monday 01:00
    every_quarter = CronWindow(cron="*/15 * * * *", duration_minutes=5)
    assert every_quarter.contains(at(2, 10, 34)) and not every_quarter.contains(at(2, 10, 36))


def test_cron_day_fields_follow_cron_semantics() -> None:
    # both day fields restricted: either matches (the 1st of the month, or any Sunday)
    either = CronWindow(cron="0 0 1 * 0", duration_minutes=60)
    assert either.contains(at(1, 0, 30))  # Sunday 1 March
    assert either.contains(at(8, 0, 30))  # a Sunday
    assert not either.contains(at(10, 0, 30))  # a Tuesday, not the 1st
    sunday_as_seven = CronWindow(cron="0 0 * * 7", duration_minutes=60)
    assert sunday_as_seven.contains(at(8, 0, 30))


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "cron", "cron": "0 1 * *", "duration_minutes": 10},
        {"type": "cron", "cron": "61 1 * * *", "duration_minutes": 10},
        {"type": "cron", "cron": "0 1 * * mon", "duration_minutes": 10},
        {"type": "cron", "cron": "0 1 * * *", "duration_minutes": 0},
        {"type": "daily", "start": "25:00", "end": "02:00"},
        {"type": "daily", "start": "02:00", "end": "02:00"},
        {"type": "weekly"},
    ],
)
def test_invalid_windows_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(MaintenanceWindow).validate_python(bad)


def test_no_windows_means_always_open_and_earliest_opening_wins() -> None:
    assert in_window([], at(2, 12)) and next_opening([], at(2, 12)) is None
    windows: list[DailyWindow | CronWindow] = [
        DailyWindow(start="03:00", end="04:00"),
        CronWindow(cron="30 2 * * *", duration_minutes=10),
    ]
    assert not in_window(windows, at(2, 12))
    assert next_opening(windows, at(2, 12)) == at(3, 2, 30)
