"""Leader election on a real PostgreSQL: one leader per schema, take-over when its session ends, and a deposed
leader's writes refused by the epoch fence."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from hub.cluster import AlwaysLeader, FencedError, PostgresLeadership, leadership_for
from hub.config import HubSettings
from hub.errors import ConflictError
from hub.registry import Database
from tests.pg_schema import fresh_schema
from tests.waiting import wait_until


@pytest.fixture
def db() -> Iterator[Database]:
    with fresh_schema() as url:
        database = Database(url)
        yield database
        database.close()


class Recorder:
    """Records elections and depositions of one replica."""

    def __init__(self) -> None:
        self.elected: list[int] = []
        self.deposed = threading.Event()

    def on_elected(self, epoch: int) -> None:
        self.elected.append(epoch)

    def on_deposed(self) -> None:
        self.deposed.set()


def _start(db: Database, name: str, check_s: float) -> tuple[PostgresLeadership, Recorder]:
    leadership, recorder = PostgresLeadership(db, holder=name, check_s=check_s), Recorder()
    leadership.start(recorder.on_elected, recorder.on_deposed)
    return leadership, recorder


def test_one_leader_then_the_next_with_a_higher_epoch(db: Database) -> None:
    a, a_calls = _start(db, "a", 0.05)
    b, b_calls = _start(Database(db.url), "b", 0.05)
    try:
        assert (a.epoch, a_calls.elected) == (1, [1])  # the first replica leads when start returns
        assert b.epoch is None and b_calls.elected == []
        a.stop()
        assert a_calls.deposed.is_set()
        assert wait_until(lambda: b.epoch == 2, 10)
        assert b_calls.elected == [2]
    finally:
        a.stop()
        b.stop()
        b.db.close()


def test_a_deposed_leader_that_has_not_noticed_is_fenced(db: Database) -> None:
    a, a_calls = _start(db, "a", 3600)  # never checks its lock: it will not notice losing it
    b, _ = _start(Database(db.url), "b", 0.05)
    try:
        assert a.epoch == 1
        with db.session() as session:
            a.fence(session)  # the leader's write passes
        assert a._lock_conn is not None
        pid = a._lock_conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with b.db.engine.begin() as conn:  # the leader's session dies abruptly, its lock with it
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert wait_until(lambda: b.epoch == 2, 10)
        assert a.epoch == 1 and not a_calls.deposed.is_set()  # still believes it leads
        with pytest.raises(FencedError, match=r"epoch 1, current 2"), db.session() as session:
            a.fence(session)
        with b.db.session() as session:
            b.fence(session)
    finally:
        a.stop()
        b.stop()
        b.db.close()


def test_the_leader_notices_its_lost_session_and_steps_down(db: Database) -> None:
    a, a_calls = _start(db, "a", 0.05)
    try:
        assert a._lock_conn is not None
        pid = a._lock_conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with db.engine.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert a_calls.deposed.wait(10)
        assert wait_until(lambda: a.epoch == 2, 10)  # nobody else campaigns: it wins again, with a new epoch
        assert a_calls.elected == [1, 2]
    finally:
        a.stop()


def test_a_single_hub_always_leads(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    leadership, calls = leadership_for(db, replica=False), Recorder()
    assert isinstance(leadership, AlwaysLeader)
    leadership.start(calls.on_elected, calls.on_deposed)
    assert calls.elected == [0] and leadership.is_leader
    leadership.stop()
    assert calls.deposed.is_set() and not leadership.is_leader
    with pytest.raises(ConflictError, match="replicas need PostgreSQL"):
        leadership_for(db, replica=True)
    db.close()


def test_a_replica_needs_postgres_and_an_external_broker() -> None:
    with pytest.raises(ValueError, match="replica needs an external broker"):
        HubSettings(replica=True, database_url="postgresql://x/y")
    with pytest.raises(ValueError, match="replica needs an external broker"):
        HubSettings(replica=True, broker_url="mqtt://127.0.0.1:1883")
    settings = HubSettings(replica=True, broker_url="mqtt://127.0.0.1:1883", database_url="postgresql://x/y")
    assert settings.telemetry_filter().startswith("$share/edgefleet-hub/")
