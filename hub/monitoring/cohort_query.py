"""The query parameters the cohort reports share (drift, contract violations): ``cohort``, ``by`` and
``last_hours``, declared once as a FastAPI dependency."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import Query

__all__ = ["CohortQuery", "cohort_query"]


@dataclass(frozen=True)
class CohortQuery:
    """Which cohorts a report splits telemetry into, and from when."""

    by: list[str]
    selectors: dict[str, str]
    """Named label selectors, each named by its own text."""
    since: float | None
    """Only telemetry since then (None: all that is kept)."""


def cohort_query(
    cohort: list[str] = Query(default=[], description="label selector naming one cohort; repeatable"),
    by: list[str] = Query(default=["target"], description="target, version or label:KEY; repeatable"),
    last_hours: float | None = Query(default=None, gt=0, description="only telemetry of the last N hours"),
) -> CohortQuery:
    """The cohort parameters of a report request (``Depends(cohort_query)``)."""
    since = time.time() - last_hours * 3600 if last_hours else None
    return CohortQuery(by=by, selectors={c: c for c in cohort}, since=since)
