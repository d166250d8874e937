"""The transition table: every working state has an OK and a FAIL edge; failures after INSTALL roll back."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from agent.errors import HealthCheckError
from agent.state_store import UpdateRecord
from agent.update import TERMINAL, TRANSITIONS, Event, Outcome, next_state, run_handler
from fleet.wire.messages import UpdateState as S
from tests.agent.conftest import MemoryHub

WORKING = (S.DOWNLOAD, S.VERIFY, S.INSTALL, S.HEALTH_CHECK, S.COMMIT, S.ROLLBACK)


def test_every_working_state_has_both_edges_and_terminals_have_none() -> None:
    for state in WORKING:
        assert (state, Event.OK) in TRANSITIONS and (state, Event.FAIL) in TRANSITIONS
    assert not any(state in TERMINAL for state, _ in TRANSITIONS)
    assert [next_state(s, Event.OK) for s in WORKING[:5]] == [S.VERIFY, S.INSTALL, S.HEALTH_CHECK, S.COMMIT, S.DONE]


def test_failures_before_the_candidate_exists_fail_and_later_ones_roll_back() -> None:
    assert {next_state(s, Event.FAIL) for s in (S.DOWNLOAD, S.VERIFY, S.INSTALL)} == {S.FAILED}
    assert {next_state(s, Event.FAIL) for s in (S.HEALTH_CHECK, S.COMMIT)} == {S.ROLLBACK}
    assert next_state(S.ROLLBACK, Event.OK) == next_state(S.ROLLBACK, Event.FAIL) == S.FAILED
    assert next_state(S.IDLE, Event.START) == S.DOWNLOAD and next_state(S.IDLE, Event.FAIL) == S.FAILED


class _Raises:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def run(self, record: UpdateRecord) -> Outcome:
        raise self.exc


@pytest.fixture
def a_record(tmp_path: Path) -> UpdateRecord:
    order = MemoryHub(tmp_path).order("ab" * 32, 10, version="1.0.0")
    return UpdateRecord(order=order, state=S.INSTALL)


def test_agent_errors_and_disk_errors_become_a_fail_with_the_reason(a_record: UpdateRecord) -> None:
    assert run_handler(_Raises(HealthCheckError("self-test failed")), a_record) == Outcome.fail("self-test failed")
    outcome = run_handler(_Raises(OSError(errno.ENOSPC, "No space left on device")), a_record)
    assert outcome.event is Event.FAIL and "ENOSPC (No space left on device)" in outcome.detail
    assert "install" in outcome.detail


def test_other_exceptions_are_not_swallowed(a_record: UpdateRecord) -> None:
    with pytest.raises(KeyError):
        run_handler(_Raises(KeyError("bug")), a_record)
