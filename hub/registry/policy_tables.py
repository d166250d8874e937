"""Tables of drift policies: one policy per model version, and the events of what policies did."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


def _now() -> float:
    return time.time()


class ModelPolicyRow(SQLModel, table=True):
    """The policy of one model version (`hub.policies.config.Policy` as JSON)."""

    __tablename__ = "model_policy"
    __table_args__ = (UniqueConstraint("model", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    policy: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    updated_at: float = Field(default_factory=_now)


class PolicyEventRow(SQLModel, table=True):
    """One thing a policy did (alert, pause, rollback) or failed to do, with the evidence it acted on."""

    __tablename__ = "policy_event"
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128, index=True)
    version: str = Field(max_length=64)
    cohort: str = Field(max_length=256)
    action: str = Field(max_length=32)
    detail: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: float = Field(default_factory=_now, index=True)
