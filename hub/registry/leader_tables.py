"""The leadership row of hub replicas: per duty, the current epoch (the fencing token) and who holds it
(`hub.cluster.leadership` elects; every outbox write checks the epoch in its own transaction)."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class LeaderRow(SQLModel, table=True):
    """The current leadership epoch of one duty (``rollouts``) and who holds it."""

    __tablename__ = "hub_leader"
    name: str = Field(primary_key=True, max_length=64)
    epoch: int = 0
    holder: str = Field(default="", max_length=200)
    elected_at: float = 0.0
