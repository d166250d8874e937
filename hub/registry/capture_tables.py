"""Captured input samples: one row per capture message a device sent (opt-in on the device)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


def _now() -> float:
    return time.time()


class CaptureRow(SQLModel, table=True):
    """Sampled inputs of one model version from one device, with the answers given; the key drops repeats."""

    __tablename__ = "capture"
    batch_id: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(max_length=63)
    target: str = Field(max_length=64)
    model: str = Field(max_length=128, index=True)
    version: str = Field(max_length=64)
    shape: list[int] = Field(default_factory=list, sa_column=Column(JSON))
    samples: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    received_at: float = Field(default_factory=_now, index=True)
