"""`LoginGuard`: device logins are refused without hashing while backed off, per id and per address; the
failed-login counter counts by kind and reason."""

from __future__ import annotations

import time_machine
from prometheus_client import CollectorRegistry

from hub.auth import BackoffPolicy, LoginBackoffSettings, LoginGuard, LoginKind

STRICT = LoginBackoffSettings(
    per_identity=BackoffPolicy(free_failures=2, base_s=10),
    per_address=BackoffPolicy(free_failures=4, base_s=10),
)


def _failures(prometheus: CollectorRegistry, kind: str, reason: str) -> float:
    value = prometheus.get_sample_value("edgefleet_login_failures_total", {"kind": kind, "reason": reason})
    return value or 0.0


class Verifier:
    """Stands for the costly hash check; counts how often it ran."""

    def __init__(self, result: bool) -> None:
        self.result = result
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.result


def test_a_backed_off_device_id_is_refused_without_hashing_even_with_the_right_secret() -> None:
    prometheus = CollectorRegistry()
    guard = LoginGuard(STRICT, prometheus=prometheus)
    wrong, right = Verifier(False), Verifier(True)
    with time_machine.travel(1_000_000, tick=False) as clock:
        for _ in range(3):
            assert not guard.check_device("cam-1", "10.0.0.1", wrong)
        assert not guard.check_device("cam-1", "10.0.0.2", right)  # another address: the id is backed off
        assert (wrong.calls, right.calls) == (3, 0)
        assert _failures(prometheus, "device", "bad_credentials") == 3
        assert _failures(prometheus, "device", "backed_off") == 1
        assert guard.check_device("cam-2", "10.0.0.2", right)  # other ids are not
        clock.shift(10)
        assert guard.check_device("cam-1", "10.0.0.2", right) and right.calls == 2


def test_one_address_guessing_many_ids_is_backed_off() -> None:
    guard = LoginGuard(STRICT, prometheus=CollectorRegistry())
    wrong = Verifier(False)
    with time_machine.travel(1_000_000, tick=False):
        for i in range(5):
            guard.check_device(f"guess-{i}", "203.0.113.7", wrong)
        assert wrong.calls == 5
        assert not guard.check_device("guess-99", "203.0.113.7", Verifier(True))
        assert guard.refused_for(LoginKind.DEVICE, "203.0.113.7") == 10
        assert guard.refused_for(LoginKind.DEVICE, "198.51.100.1") == 0
        assert guard.refused_for(LoginKind.API, "203.0.113.7") == 0  # tokens keep their own count


def test_refusals_while_backed_off_do_not_extend_the_back_off() -> None:
    guard = LoginGuard(STRICT, prometheus=CollectorRegistry())
    with time_machine.travel(1_000_000, tick=False) as clock:
        for _ in range(3):
            guard.check_device("cam-1", "10.0.0.1", Verifier(False))
        for _ in range(50):
            guard.check_device("cam-1", "10.0.0.1", Verifier(False))
        clock.shift(10)
        assert guard.check_device("cam-1", "10.0.0.9", Verifier(True))
