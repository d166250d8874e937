"""The reconnect schedule: exponential ceilings, half fixed and half jittered, capped, never ending."""

from __future__ import annotations

import random
import statistics

import pytest

from fleet.wire.backoff import Backoff


def test_ceilings_double_up_to_the_cap_and_each_delay_lies_in_its_upper_half() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(1))
    ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    delays = [backoff.next_delay() for _ in ceilings]
    for ceiling, delay in zip(ceilings, delays, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_attempts_go_on_forever_within_the_cap() -> None:
    backoff = Backoff(0.5, 30.0, rng=random.Random(2))
    delays = [backoff.next_delay() for _ in range(5000)]  # far past where 0.5 * 2**n overflows a float
    assert all(15.0 <= d <= 30.0 for d in delays[10:])


def test_devices_that_lost_the_broker_together_come_back_spread_out() -> None:
    fleet = [Backoff(1.0, 60.0, rng=random.Random(seed)) for seed in range(200)]
    for _ in range(6):  # sixth attempt: ceiling 32 s
        sixth = [b.next_delay() for b in fleet]
    assert statistics.pstdev(sixth) > 3.0  # uniform over [16, 32] has a spread of about 4.6 s
    assert len({round(d, 1) for d in sixth}) > 100


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)])
def test_a_schedule_that_cannot_work_is_refused(initial: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < initial_s <= cap_s"):
        Backoff(initial, cap)


def test_reset_starts_again_from_the_initial_ceiling() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(3))
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0
