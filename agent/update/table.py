"""The transition table of the update state machine, the `Outcome` a state handler returns, and how a
handler's failure becomes an event."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from agent.errors import AgentError, storage_error
from agent.state_store import UpdateRecord
from fleet.wire.messages import UpdateState


class Event(StrEnum):
    """What a state handler produced."""

    START = "start"
    OK = "ok"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A handler's event and the detail to record (the failure reason for ``FAIL``)."""

    event: Event
    detail: str = ""

    @classmethod
    def ok(cls, detail: str = "") -> Outcome:
        """The state's work is done."""
        return cls(Event.OK, detail)

    @classmethod
    def fail(cls, reason: str) -> Outcome:
        """The state failed for ``reason``."""
        return cls(Event.FAIL, reason)


class Handler(Protocol):
    """One state's work: idempotent, given the persisted record; raises `AgentError` to fail."""

    def run(self, record: UpdateRecord) -> Outcome:
        """Do the state's work for ``record`` (which it may update) and return the outcome."""


S = UpdateState
TRANSITIONS: Final[dict[tuple[UpdateState, Event], UpdateState]] = {
    (S.IDLE, Event.START): S.DOWNLOAD,
    (S.IDLE, Event.FAIL): S.FAILED,  # the order could not even be recorded (disk full)
    (S.DOWNLOAD, Event.OK): S.VERIFY,
    (S.DOWNLOAD, Event.FAIL): S.FAILED,
    (S.VERIFY, Event.OK): S.INSTALL,
    (S.VERIFY, Event.FAIL): S.FAILED,
    (S.INSTALL, Event.OK): S.HEALTH_CHECK,
    (S.INSTALL, Event.FAIL): S.FAILED,
    (S.HEALTH_CHECK, Event.OK): S.COMMIT,
    (S.HEALTH_CHECK, Event.FAIL): S.ROLLBACK,
    (S.COMMIT, Event.OK): S.DONE,
    (S.COMMIT, Event.FAIL): S.ROLLBACK,
    (S.ROLLBACK, Event.OK): S.FAILED,
    (S.ROLLBACK, Event.FAIL): S.FAILED,
}
TERMINAL: Final = frozenset({S.DONE, S.FAILED})


def next_state(state: UpdateState, event: Event) -> UpdateState:
    """The state after ``event`` in ``state``, from the one table."""
    return TRANSITIONS[(state, event)]


def run_handler(handler: Handler, record: UpdateRecord) -> Outcome:
    """Run ``handler``; an `AgentError` or a disk error (ENOSPC named) becomes a ``FAIL`` with its reason."""
    try:
        return handler.run(record)
    except AgentError as exc:
        return Outcome.fail(str(exc))
    except OSError as exc:  # a disk error anywhere in a step fails the update instead of leaving it stuck
        return Outcome.fail(str(storage_error(f"{record.state} failed on the device's disk", exc)))
