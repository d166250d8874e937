"""Access tables: API tokens (stored only as a SHA-256 digest) and the audit log of changes."""

from __future__ import annotations

import time

from sqlmodel import Field, SQLModel


def _now() -> float:
    return time.time()


class ApiToken(SQLModel, table=True):
    """A bearer token of the REST API: its role, lifetime and the digest it is checked against."""

    __tablename__ = "api_token"
    id: str = Field(primary_key=True, max_length=16, description="the digest's first hex digits: names the token")
    name: str = Field(max_length=128)
    role: str = Field(max_length=16)
    token_sha256: str = Field(max_length=64, unique=True)
    created_at: float = Field(default_factory=_now)
    created_by: str = Field(default="", max_length=160)
    expires_at: float | None = None
    revoked_at: float | None = None


class AuditEntry(SQLModel, table=True):
    """One change asked of the hub: who, what, when, from where, and how it ended."""

    __tablename__ = "audit_entry"
    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(default_factory=_now, index=True)
    token_id: str = Field(index=True, max_length=16)
    token_name: str = Field(max_length=128)
    role: str = Field(max_length=16)
    method: str = Field(max_length=16)
    route: str = Field(max_length=256)
    path: str = Field(max_length=1024)
    client: str = Field(max_length=128)
    status: int
