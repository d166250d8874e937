"""Failure back-off: free failures, doubling refusals up to a cap, forgetting, bounded memory."""

from __future__ import annotations

import time_machine

from hub.auth.backoff import BackoffPolicy, FailureBackoff


def test_refusal_doubles_after_the_free_failures_and_is_capped() -> None:
    backoff = FailureBackoff(BackoffPolicy(free_failures=3, base_s=2, max_s=10, forget_after_s=3600))
    with time_machine.travel(1_000_000, tick=False):
        for _ in range(3):
            backoff.failed("k")
        assert backoff.retry_after("k") == 0
        waits = []
        for _ in range(4):
            backoff.failed("k")
            waits.append(backoff.retry_after("k"))
    assert waits == [2, 4, 8, 10]


def test_refusal_ends_when_its_time_has_passed() -> None:
    backoff = FailureBackoff(BackoffPolicy(free_failures=1, base_s=5, forget_after_s=3600))
    with time_machine.travel(1_000_000, tick=False) as clock:
        backoff.failed("k")
        backoff.failed("k")
        assert backoff.retry_after("k") == 5
        clock.shift(4.5)
        assert backoff.retry_after("k") == 0.5
        clock.shift(0.5)
        assert backoff.retry_after("k") == 0
        backoff.failed("k")  # the count goes on: the next refusal is longer
        assert backoff.retry_after("k") == 10


def test_failures_are_forgotten_and_success_clears_them() -> None:
    backoff = FailureBackoff(BackoffPolicy(free_failures=2, base_s=1, forget_after_s=60))
    with time_machine.travel(1_000_000, tick=False) as clock:
        backoff.failed("old")
        backoff.failed("old")
        clock.shift(61)
        backoff.failed("old")  # the earlier two are forgotten: still free
        assert backoff.retry_after("old") == 0
        for _ in range(3):
            backoff.failed("fixed")
        assert backoff.retry_after("fixed") > 0
        backoff.succeeded("fixed")
        assert backoff.retry_after("fixed") == 0


def test_memory_is_bounded_by_forgetting_the_least_recent_keys() -> None:
    backoff = FailureBackoff(BackoffPolicy(free_failures=1, max_keys=100))
    with time_machine.travel(1_000_000, tick=False):
        backoff.failed("first")
        backoff.failed("first")
        for i in range(1000):
            backoff.failed(f"addr-{i}")
        assert len(backoff) == 100
        assert backoff.retry_after("first") == 0  # evicted
        backoff.failed("addr-999")
        assert backoff.retry_after("addr-999") > 0  # recent keys stay
