"""Leader election among hub replicas: a PostgreSQL advisory lock, and an epoch as fencing token.

Exactly one replica holds the session-level advisory lock ``pg_try_advisory_lock(key)`` on a connection kept open
for that purpose; PostgreSQL releases it the moment that connection ends (the process died, was killed, or lost
the network and its TCP keepalive ran out), so another replica takes over within one ``check_s``. On taking the
lock a replica increments ``hub_leader.epoch``: that number is its fencing token. Every write the leader makes
to the rollout outbox first reads the epoch in the same transaction (`Leadership.fence`), so a deposed leader
that has not yet noticed (a long GC pause, a half-open connection) has its late writes refused with
`FencedError` instead of dispatching an order twice.

On SQLite the hub is a single machine: `AlwaysLeader` (epoch 0, no fence).

    leadership = leadership_for(db, holder="hub-a")
    leadership.start(on_elected=duties.lead, on_deposed=duties.step_down)
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from hub.errors import ConflictError
from hub.registry.db import Database
from hub.registry.leader_tables import LeaderRow

__all__ = ["AlwaysLeader", "FencedError", "Leadership", "PostgresLeadership", "leadership_for"]

log = logging.getLogger(__name__)

Elected = Callable[[int], None]
Deposed = Callable[[], None]


class FencedError(ConflictError):
    """A write by a replica that is no longer the leader (its epoch is not the current one)."""


class Leadership:
    """Who leads: ``epoch`` is the fencing token while leading, None otherwise."""

    epoch: int | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this replica currently believes it leads (writes are still fenced by the database)."""
        return self.epoch is not None

    def start(self, on_elected: Elected, on_deposed: Deposed) -> None:
        """Campaign; call ``on_elected(epoch)`` on winning and ``on_deposed()`` on losing the lead."""
        raise NotImplementedError

    def stop(self) -> None:
        """Give up the lead (calling ``on_deposed`` when leading) and stop campaigning."""
        raise NotImplementedError

    def fence(self, session: Session) -> None:
        """Raise `FencedError` inside ``session``'s transaction unless this replica's epoch is the current one."""


class AlwaysLeader(Leadership):
    """A single hub (SQLite, or one replica): leads from `start` to `stop`, nothing to fence."""

    def __init__(self) -> None:
        self._on_deposed: Deposed | None = None

    def start(self, on_elected: Elected, on_deposed: Deposed) -> None:
        """Lead at once."""
        self.epoch, self._on_deposed = 0, on_deposed
        on_elected(0)

    def stop(self) -> None:
        """Step down; safe to call twice."""
        if self.epoch is not None and self._on_deposed is not None:
            self.epoch = None
            self._on_deposed()


class PostgresLeadership(Leadership):
    """Campaigns for a PostgreSQL advisory lock every ``check_s``; the holder checks its lock connection as often."""

    def __init__(self, db: Database, *, name: str = "rollouts", holder: str | None = None, check_s: float = 2.0):
        self.db = db
        self.name = name
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.check_s = check_s
        self._lock_conn: Connection | None = None
        self._key: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_elected: Elected | None = None
        self._on_deposed: Deposed | None = None
        self._transition = threading.Lock()

    def start(self, on_elected: Elected, on_deposed: Deposed) -> None:
        """Try once now (a lone replica leads when `start` returns), then keep campaigning on a thread."""
        self._on_elected, self._on_deposed = on_elected, on_deposed
        self._stop.clear()
        self._campaign()
        self._thread = threading.Thread(target=self._run, name="edgefleet-leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop campaigning, step down and release the lock; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._step_down("stopping")

    def fence(self, session: Session) -> None:
        """Lock the leader row for this transaction and compare epochs (a new leader's bump waits for us)."""
        mine = self.epoch
        current = session.execute(
            text("SELECT epoch FROM hub_leader WHERE name = :name FOR SHARE"), {"name": self.name}
        ).scalar_one_or_none()
        if mine is None or current != mine:
            raise FencedError(f"replica {self.holder} is not the {self.name} leader (epoch {mine}, current {current})")

    # -- campaign -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.check_s):
            self._campaign()

    def _campaign(self) -> None:
        with self._transition:
            if self._stop.is_set() and self.epoch is None:
                return
            if self.epoch is not None:
                if not self._still_holding():
                    self._step_down_locked("lost the database connection holding the lead")
                return
            try:
                epoch = self._try_acquire()
            except SQLAlchemyError as exc:
                log.warning("leadership: campaign failed: %s", exc)
                self._drop_lock_conn()
                return
            if epoch is None:
                return
            self.epoch = epoch
            log.info("leadership: %s leads %s with epoch %d", self.holder, self.name, epoch)
        if self._on_elected is not None:
            self._on_elected(epoch)

    def _try_acquire(self) -> int | None:
        if self._lock_conn is None:
            self._lock_conn = self.db.engine.connect()
        conn = self._lock_conn
        if self._key is None:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            self._key = _lock_key(f"{schema}/{self.name}")  # advisory locks span the database, not a schema
        won = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}).scalar_one()
        conn.commit()  # the session-level lock outlives this transaction
        if not won:
            return None
        with self.db.session() as session:
            row = session.get(LeaderRow, self.name, with_for_update=True)
            if row is None:
                row = LeaderRow(name=self.name)
            row.epoch += 1
            row.holder, row.elected_at = self.holder, time.time()
            session.add(row)
            return row.epoch

    def _still_holding(self) -> bool:
        if self._lock_conn is None:
            return False
        try:
            self._lock_conn.execute(text("SELECT 1"))
            self._lock_conn.commit()
        except SQLAlchemyError:
            return False
        return True

    def _step_down(self, why: str) -> None:
        with self._transition:
            self._step_down_locked(why)

    def _step_down_locked(self, why: str) -> None:
        was_leading = self.epoch is not None
        self.epoch = None
        self._drop_lock_conn()  # ends the session: PostgreSQL releases the advisory lock
        if was_leading:
            log.warning("leadership: %s no longer leads %s: %s", self.holder, self.name, why)
            if self._on_deposed is not None:
                self._on_deposed()

    def _drop_lock_conn(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is None:
            return
        try:
            conn.invalidate()  # never back into the pool: the lock must go with this session
            conn.close()
        except SQLAlchemyError:
            log.debug("leadership: closing the lock connection failed", exc_info=True)


def leadership_for(db: Database, *, replica: bool, holder: str | None = None, check_s: float = 2.0) -> Leadership:
    """`PostgresLeadership` for a replica on PostgreSQL; otherwise `AlwaysLeader`."""
    if not replica:
        return AlwaysLeader()
    if not db.url.startswith("postgresql"):
        raise ConflictError(f"hub replicas need PostgreSQL, not {db.engine.url.get_backend_name()}")
    return PostgresLeadership(db, holder=holder, check_s=check_s)


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
