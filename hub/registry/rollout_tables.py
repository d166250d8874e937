"""Rollout tables: one row per rollout (its `fleet.rollout.RolloutSnapshot` as JSON), an outbox of the
actions each step produced, a queue of operator commands (so the CLI can steer a running hub through
the database alone), and the last failure detail per device per rollout (kept across hub restarts)."""

from __future__ import annotations

import time

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel


def _now() -> float:
    return time.time()


class RolloutRow(SQLModel, table=True):
    """A rollout: its snapshot, and a few columns copied out of it for listing."""

    __tablename__ = "rollout"
    id: str = Field(primary_key=True, max_length=100)
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    state: str = Field(index=True, max_length=32)
    final: bool = Field(default=False, index=True)
    snapshot: str = Field(sa_column=Column(Text, nullable=False))
    created_at: float = Field(default_factory=_now)
    updated_at: float = Field(default_factory=_now)


class RolloutOutbox(SQLModel, table=True):
    """Actions of one step, stored with the snapshot they came from; ``done`` once carried out."""

    __tablename__ = "rollout_outbox"
    id: int | None = Field(default=None, primary_key=True)
    rollout_id: str = Field(index=True, max_length=100)
    actions: str = Field(sa_column=Column(Text, nullable=False))
    done: bool = Field(default=False, index=True)
    created_at: float = Field(default_factory=_now)


class RolloutCommandRow(SQLModel, table=True):
    """An operator command (pause, resume, abort, promote) waiting for the hub's next tick."""

    __tablename__ = "rollout_command"
    id: int | None = Field(default=None, primary_key=True)
    rollout_id: str = Field(index=True, max_length=100)
    command: str = Field(max_length=16)
    done: bool = Field(default=False, index=True)
    error: str = ""
    created_at: float = Field(default_factory=_now)


class RolloutDeviceError(SQLModel, table=True):
    """The detail of the last failed update event a device sent for a rollout (or its ``.rollback``
    deployment), so that failure reasons survive a hub restart."""

    __tablename__ = "rollout_device_error"
    deployment_id: str = Field(primary_key=True, max_length=110)
    device_id: str = Field(primary_key=True, max_length=63)
    rollout_id: str = Field(index=True, max_length=100)
    detail: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: float = Field(default_factory=_now)


class RolloutRetainedBundle(SQLModel, table=True):
    """A bundle whose chunks the broker keeps retained for a running rollout: written before they are published,
    removed once they are cleared, so a hub that stopped in between clears them after its restart."""

    __tablename__ = "rollout_retained_bundle"
    rollout_id: str = Field(primary_key=True, max_length=100)
    sha256: str = Field(primary_key=True, max_length=64)
    chunk_count: int  # what to clear, even once the bundle itself is gone from the store
    created_at: float = Field(default_factory=_now)
