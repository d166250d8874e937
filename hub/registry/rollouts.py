"""Rollout storage: each rollout's snapshot, the outbox of actions of every step, the operator command queue,
the deployments mirroring a rollout, and the failure details devices reported.

Persist, then act: the manager stores a step's snapshot and its actions in one transaction, carries the actions
out and marks them done, so a restarted hub drains the outbox and keeps stepping from the stored snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, col, select

from fleet.rollout import Action, Command, RolloutSnapshot, dump_actions, load_actions
from hub.errors import ConflictError, NotFoundError
from hub.registry.db import Database
from hub.registry.rollout_tables import (
    RolloutCommandRow,
    RolloutDeviceError,
    RolloutOutbox,
    RolloutRetainedBundle,
    RolloutRow,
)
from hub.registry.tables import Deployment, DeploymentDevice

__all__ = ["ROLLBACK_SUFFIX", "RolloutStore"]

ROLLBACK_SUFFIX = ".rollback"
_MAX_DEPLOYMENT_ID = 64  # Deployment.id's column length


class RolloutStore:
    """Rollout rows, their action outbox and the operator command queue (each method one transaction).

    ``fence``, when given, runs first inside every `save` transaction and raises to refuse the write (the
    leadership epoch check of hub replicas, `hub.cluster.leadership`)."""

    def __init__(self, db: Database, *, fence: Callable[[Session], None] | None = None) -> None:
        self.db = db
        self.fence = fence

    def create(self, snapshot: RolloutSnapshot) -> None:
        """Store a new rollout."""
        with self.db.session() as session:
            if session.get(RolloutRow, snapshot.rollout_id) is not None:
                raise ConflictError(f"rollout {snapshot.rollout_id} already exists")
            session.add(_row(snapshot))

    def load(self, rollout_id: str) -> RolloutSnapshot:
        """The stored snapshot, or `NotFoundError`."""
        return RolloutSnapshot.model_validate_json(self.load_json(rollout_id))

    def load_json(self, rollout_id: str) -> str:
        """The stored snapshot as its JSON text (what `save` wrote), or `NotFoundError`."""
        with self.db.session() as session:
            text = session.exec(select(RolloutRow.snapshot).where(RolloutRow.id == rollout_id)).first()
        if text is None:
            raise NotFoundError(f"rollout {rollout_id} does not exist")
        return text

    def all(self) -> list[RolloutRow]:
        """All rollouts, newest first."""
        with self.db.session() as session:
            return list(session.exec(select(RolloutRow).order_by(col(RolloutRow.created_at).desc())))

    def open_ids(self) -> list[str]:
        """Ids of rollouts that are not completed or aborted, oldest first."""
        with self.db.session() as session:
            query = select(RolloutRow.id).where(col(RolloutRow.final).is_(False)).order_by(col(RolloutRow.created_at))
            return list(session.exec(query))

    def save(self, snapshot: RolloutSnapshot, actions: list[Action], *, dumped: str | None = None) -> int | None:
        """Store the snapshot (``dumped``: its JSON, when the caller has it) and, in the same transaction, its
        actions as an outbox row; return its id."""
        with self.db.session() as session:
            if self.fence is not None:
                self.fence(session)
            row = session.get(RolloutRow, snapshot.rollout_id)
            if row is None:
                raise NotFoundError(f"rollout {snapshot.rollout_id} does not exist")
            row.snapshot = dumped if dumped is not None else snapshot.model_dump_json()
            row.state, row.final, row.updated_at = snapshot.state.value, snapshot.final, time.time()
            session.add(row)
            for deployment_id in (snapshot.rollout_id, snapshot.rollout_id + ROLLBACK_SUFFIX):
                deployment = session.get(Deployment, deployment_id) if _mirrored(deployment_id) else None
                if deployment is not None and deployment.status != snapshot.state.value:
                    deployment.status = snapshot.state.value
                    session.add(deployment)
            if not actions:
                return None
            outbox = RolloutOutbox(rollout_id=snapshot.rollout_id, actions=dump_actions(actions).decode())
            session.add(outbox)
            session.flush()
            return outbox.id

    def undone_actions(self) -> list[tuple[int, str, list[Action]]]:
        """Outbox rows not yet carried out, oldest first: (id, rollout id, actions)."""
        with self.db.session() as session:
            rows = list(
                session.exec(
                    select(RolloutOutbox).where(col(RolloutOutbox.done).is_(False)).order_by(col(RolloutOutbox.id))
                )
            )
        return [(r.id or 0, r.rollout_id, load_actions(r.actions)) for r in rows]

    def mark_done(self, outbox_id: int | None) -> None:
        """Record that an outbox row's actions were carried out."""
        if outbox_id is None:
            return
        with self.db.session() as session:
            row = session.get(RolloutOutbox, outbox_id)
            if row is not None:
                row.done = True
                session.add(row)

    def history(self, rollout_id: str) -> list[Action]:
        """Every action the rollout produced, in order (the audit log)."""
        with self.db.session() as session:
            rows = list(
                session.exec(
                    select(RolloutOutbox).where(RolloutOutbox.rollout_id == rollout_id).order_by(col(RolloutOutbox.id))
                )
            )
        return [a for r in rows for a in load_actions(r.actions)]

    def events(self, rollout_id: str) -> list[dict[str, Any]]:
        """The rollout's timeline: every action it produced with the time it was stored (``at``), oldest first;
        `NotFoundError` for an unknown rollout."""
        self.load(rollout_id)
        with self.db.session() as session:
            rows = list(
                session.exec(
                    select(RolloutOutbox).where(RolloutOutbox.rollout_id == rollout_id).order_by(col(RolloutOutbox.id))
                )
            )
        return [{"at": r.created_at, **a.model_dump(mode="json")} for r in rows for a in load_actions(r.actions)]

    def queue_command(self, rollout_id: str, command: Command) -> int:
        """Queue an operator command for the hub's next tick."""
        with self.db.session() as session:
            row = RolloutCommandRow(rollout_id=rollout_id, command=command.value)
            session.add(row)
            session.flush()
            return row.id or 0

    def pending_commands(self) -> list[RolloutCommandRow]:
        """Queued commands, oldest first."""
        with self.db.session() as session:
            return list(
                session.exec(
                    select(RolloutCommandRow)
                    .where(col(RolloutCommandRow.done).is_(False))
                    .order_by(col(RolloutCommandRow.id))
                )
            )

    def finish_command(self, command_id: int | None, error: str = "") -> None:
        """Mark a queued command as handled (with the error when it could not be applied)."""
        with self.db.session() as session:
            row = session.get(RolloutCommandRow, command_id)
            if row is not None:
                row.done, row.error = True, error
                session.add(row)

    def mirror_deployment(
        self,
        deployment_id: str,
        model: str,
        version: str,
        devices: dict[str, int | None],
        *,
        status: str,
        allow_downgrade: bool = False,
    ) -> bool:
        """Record devices sent ``deployment_id`` as `Deployment` / `DeploymentDevice` rows (``devices``: device
        id -> variant id); rows already there are kept (replays are harmless). False when the id is too long."""
        if not _mirrored(deployment_id):
            return False
        with self.db.session() as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is None:
                deployment = Deployment(
                    id=deployment_id,
                    model=model,
                    version=version,
                    device_ids=[],
                    allow_downgrade=allow_downgrade,
                    status=status,
                )
            listed = set(deployment.device_ids)
            new = [d for d in devices if d not in listed]
            if new:
                deployment.device_ids = [*deployment.device_ids, *new]  # a new list: JSON columns track assignment
            session.add(deployment)
            session.flush()
            have = set(
                session.exec(select(DeploymentDevice.device_id).where(DeploymentDevice.deployment_id == deployment_id))
            )
            now = time.time()
            rows = [
                {"deployment_id": deployment_id, "device_id": d, "variant_id": variant_id, "updated_at": now}
                for d, variant_id in devices.items()
                if d not in have
            ]
            if rows:  # one multi-row statement: a wave of thousands is one round trip, not thousands of objects
                session.connection().execute(insert(DeploymentDevice), rows)
        return True

    def record_error(self, deployment_id: str, device_id: str, detail: str) -> bool:
        """Keep the detail of a device's failed update event for a rollout (or its rollback); False when
        ``deployment_id`` belongs to no rollout."""
        rollout_id = deployment_id.removesuffix(ROLLBACK_SUFFIX)
        with self.db.session() as session:
            if session.get(RolloutRow, rollout_id) is None:
                return False
            row = session.get(RolloutDeviceError, (deployment_id, device_id))
            if row is None:
                row = RolloutDeviceError(
                    deployment_id=deployment_id, device_id=device_id, rollout_id=rollout_id, detail=detail
                )
            row.detail, row.updated_at = detail, time.time()
            session.add(row)
        return True

    def errors(self) -> dict[tuple[str, str], str]:
        """Kept failure details of open rollouts: (device id, deployment id) -> detail."""
        with self.db.session() as session:
            query = (
                select(RolloutDeviceError)
                .join(RolloutRow, col(RolloutRow.id) == RolloutDeviceError.rollout_id)
                .where(col(RolloutRow.final).is_(False))
            )
            return {(r.device_id, r.deployment_id): r.detail for r in session.exec(query)}

    def hold_retained(self, rollout_id: str, sha256: str, chunk_count: int) -> None:
        """Record that the broker is about to keep ``sha256``'s chunks retained for ``rollout_id`` (before they
        are published: a hub stopping in between still knows to clear them)."""
        with self.db.session() as session:
            if self.fence is not None:
                self.fence(session)
            if session.get(RolloutRetainedBundle, (rollout_id, sha256)) is None:
                session.add(RolloutRetainedBundle(rollout_id=rollout_id, sha256=sha256, chunk_count=chunk_count))

    def retained(self) -> dict[str, dict[str, int]]:
        """Bundles held retained: rollout id -> {bundle digest: chunk count}."""
        held: dict[str, dict[str, int]] = {}
        with self.db.session() as session:
            for row in session.exec(select(RolloutRetainedBundle)):
                held.setdefault(row.rollout_id, {})[row.sha256] = row.chunk_count
        return held

    def drop_retained(self, rollout_id: str) -> None:
        """Forget the bundles held retained for ``rollout_id`` (after their chunks were cleared)."""
        with self.db.session() as session:
            if self.fence is not None:
                self.fence(session)
            query = select(RolloutRetainedBundle).where(col(RolloutRetainedBundle.rollout_id) == rollout_id)
            for row in session.exec(query):
                session.delete(row)


def _mirrored(deployment_id: str) -> bool:
    return len(deployment_id) <= _MAX_DEPLOYMENT_ID


def _row(snapshot: RolloutSnapshot) -> RolloutRow:
    return RolloutRow(
        id=snapshot.rollout_id,
        model=snapshot.plan.model,
        version=snapshot.plan.version,
        state=snapshot.state.value,
        final=snapshot.final,
        snapshot=snapshot.model_dump_json(),
        created_at=snapshot.created_at,
        updated_at=snapshot.updated_at,
    )
