"""SQLModel tables. Portable across SQLite and PostgreSQL: JSON columns, no vendor types."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def _now() -> float:
    return time.time()


class Model(SQLModel, table=True):
    """A named model; versions hang off it."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=128)
    description: str = ""
    created_at: float = Field(default_factory=_now)


class ModelVersion(SQLModel, table=True):
    """One semver version of a model; ordering uses the parsed fields, not the string."""

    __table_args__ = (UniqueConstraint("model_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="model.id", index=True)
    version: str = Field(max_length=64)
    major: int
    minor: int
    patch: int
    prerelease: str = ""
    notes: str = ""
    created_at: float = Field(default_factory=_now)


class Variant(SQLModel, table=True):
    """A model version built for one target: the artifact, its signed bundle, and what was measured."""

    __table_args__ = (UniqueConstraint("version_id", "target", "precision"),)
    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="modelversion.id", index=True)
    target: str = Field(max_length=64)
    runtime: str = Field(max_length=32)
    precision: str = Field(max_length=16)
    artifact_sha256: str = Field(max_length=64)
    size_bytes: int
    bundle_sha256: str = Field(max_length=64)
    bundle_size: int
    tuf_target: str = Field(max_length=256)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: float = Field(default_factory=_now)


class Device(SQLModel, table=True):
    """A provisioned device; the credential is stored only as a salted hash."""

    id: str = Field(primary_key=True, max_length=63)
    target: str = Field(max_length=64)
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    credential_hash: str = Field(max_length=256)
    broker_hash: str | None = Field(default=None, max_length=256, description="Mosquitto PBKDF2-SHA512 hash")
    nats_hash: str | None = Field(default=None, max_length=128, description="bcrypt hash for NATS (None: before 0011)")
    online: bool = False
    last_seen: float | None = None
    active_model: str | None = None
    active_version: str | None = None
    active_sha256: str | None = None
    update_state: str = "idle"
    state_ts: float | None = None  # the device's clock when it sent the stored state (a late copy is not stored)
    created_at: float = Field(default_factory=_now)
    order_sequence: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


#: Device columns that never leave the hub (REST answers and CLI listings drop them).
DEVICE_SECRET_FIELDS = frozenset({"credential_hash", "broker_hash", "nats_hash"})


class Deployment(SQLModel, table=True):
    """A request to bring a set of devices to one model version."""

    id: str = Field(primary_key=True, max_length=64)
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    device_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    allow_downgrade: bool = False
    status: str = "active"
    created_at: float = Field(default_factory=_now)


class DeploymentDevice(SQLModel, table=True):
    """One device's progress within a deployment."""

    deployment_id: str = Field(foreign_key="deployment.id", primary_key=True, max_length=64)
    device_id: str = Field(foreign_key="device.id", primary_key=True, max_length=63)
    variant_id: int | None = Field(default=None, foreign_key="variant.id")
    state: str = "pending"
    ok: bool = True
    detail: str = ""
    updated_at: float = Field(default_factory=_now)


class TelemetryRecord(SQLModel, table=True):
    """One telemetry batch as received; the primary key drops duplicates."""

    batch_id: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(index=True, max_length=63)
    target: str = Field(max_length=64)
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    window_start: float
    window_end: float = Field(index=True)
    requests: int
    errors: int
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    """The batch as JSON; since migration 0006 without ``feature_sketches``, which are in ``sketches``."""
    sketches: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    """The feature sketches' raw bytes (`hub.registry.telemetry_tables.pack_sketches`); None in older rows."""
    received_at: float = Field(default_factory=_now)
