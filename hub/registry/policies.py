"""Policy storage: the policy of each model version and the events of what policies did."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from hub.errors import NotFoundError
from hub.registry.db import Database
from hub.registry.policy_tables import ModelPolicyRow, PolicyEventRow

__all__ = ["PolicyStore"]


class PolicyStore:
    """Policies and policy events (each method one transaction)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, model: str, version: str, policy: dict[str, Any], *, now: float) -> ModelPolicyRow:
        """Store (or replace) the policy of ``model:version``."""
        with self.db.session() as session:
            row = session.exec(
                select(ModelPolicyRow).where(ModelPolicyRow.model == model, ModelPolicyRow.version == version)
            ).first()
            if row is None:
                row = ModelPolicyRow(model=model, version=version)
            row.policy = policy
            row.updated_at = now
            session.add(row)
            session.flush()
            session.refresh(row)
            return row

    def get(self, model: str, version: str) -> ModelPolicyRow:
        """The policy of ``model:version``, or `NotFoundError`."""
        with self.db.session() as session:
            row = session.exec(
                select(ModelPolicyRow).where(ModelPolicyRow.model == model, ModelPolicyRow.version == version)
            ).first()
        if row is None:
            raise NotFoundError(f"{model}:{version} has no policy")
        return row

    def all(self) -> list[ModelPolicyRow]:
        """Every stored policy."""
        with self.db.session() as session:
            return list(session.exec(select(ModelPolicyRow).order_by(col(ModelPolicyRow.id))))

    def record(
        self, model: str, version: str, cohort: str, action: str, detail: str, evidence: dict[str, Any], *, now: float
    ) -> PolicyEventRow:
        """Store one policy event."""
        row = PolicyEventRow(
            model=model, version=version, cohort=cohort, action=action, detail=detail, evidence=evidence, created_at=now
        )
        with self.db.session() as session:
            session.add(row)
            session.flush()
            session.refresh(row)
            return row

    def events(self, model: str | None = None, *, limit: int = 100) -> list[PolicyEventRow]:
        """Policy events, newest first (of one model when given)."""
        query = select(PolicyEventRow).order_by(col(PolicyEventRow.id).desc()).limit(limit)
        if model is not None:
            query = query.where(PolicyEventRow.model == model)
        with self.db.session() as session:
            return list(session.exec(query))
