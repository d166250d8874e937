"""API tokens and the audit log: the only SQL of `hub.auth`.

Tokens are looked up by id (the first hex digits of their SHA-256 digest) and compared on the whole digest by
the caller; the clear token is never stored.
"""

from __future__ import annotations

import time

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from hub.errors import ConflictError, NotFoundError
from hub.registry.access_tables import ApiToken, AuditEntry
from hub.registry.db import Database

__all__ = ["AccessStore"]

MAX_AUDIT_PAGE = 1000


class AccessStore:
    """API token rows and audit entries (each method one transaction; rows come back detached).

    With ``audit_max_age_s`` entries older than that are deleted as new ones are written, at most once per
    ``prune_every_s`` (of the entries' own clock), so the log stays bounded over the years.
    """

    def __init__(self, db: Database, *, audit_max_age_s: float | None = None, prune_every_s: float = 3600.0) -> None:
        self.db = db
        self.audit_max_age_s = audit_max_age_s
        self._prune_every_s = prune_every_s
        self._pruned_at = float("-inf")

    # -- tokens ---------------------------------------------------------------------------------------------

    def add_token(self, token: ApiToken) -> ApiToken:
        """Store a new token row; `ConflictError` if its id or digest is taken."""
        try:
            with self.db.session() as session:
                session.add(token)
                session.flush()
                return token
        except IntegrityError as exc:
            raise ConflictError(f"token {token.id} already exists") from exc

    def token(self, token_id: str) -> ApiToken | None:
        """The token called ``token_id``, or None."""
        with self.db.session() as session:
            return session.get(ApiToken, token_id)

    def tokens(self) -> list[ApiToken]:
        """All tokens, oldest first (revoked and expired ones included)."""
        with self.db.session() as session:
            return list(session.exec(select(ApiToken).order_by(col(ApiToken.created_at), col(ApiToken.id))))

    def token_count(self) -> int:
        """How many tokens were ever created (revoked ones count)."""
        with self.db.session() as session:
            return int(session.exec(select(func.count()).select_from(ApiToken)).one())

    def revoke_token(self, token_id: str, at: float | None = None) -> ApiToken:
        """Mark a token revoked (idempotent: the first revocation time stays); `NotFoundError` if unknown."""
        with self.db.session() as session:
            row = session.get(ApiToken, token_id)
            if row is None:
                raise NotFoundError(f"token {token_id} does not exist")
            if row.revoked_at is None:
                row.revoked_at = time.time() if at is None else at
                session.add(row)
            return row

    # -- audit ----------------------------------------------------------------------------------------------

    def record_audit(self, entry: AuditEntry) -> None:
        """Append one audit entry (and prune entries past ``audit_max_age_s`` when a pass is due)."""
        with self.db.session() as session:
            session.add(entry)
        if self.audit_max_age_s is not None and entry.at - self._pruned_at >= self._prune_every_s:
            self._pruned_at = entry.at
            self.prune_audit(before=entry.at - self.audit_max_age_s)

    def prune_audit(self, *, before: float) -> int:
        """Delete audit entries written before ``before``; return how many."""
        with self.db.session() as session:
            result = session.execute(delete(AuditEntry).where(col(AuditEntry.at) < before))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def audit_entries(
        self, *, limit: int = 100, since: float | None = None, token_id: str | None = None
    ) -> list[AuditEntry]:
        """Audit entries, newest first, at most ``limit`` (capped at 1000), optionally since a time or of a token."""
        query = select(AuditEntry)
        if since is not None:
            query = query.where(AuditEntry.at >= since)
        if token_id is not None:
            query = query.where(AuditEntry.token_id == token_id)
        query = query.order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc())
        with self.db.session() as session:
            return list(session.exec(query.limit(max(1, min(limit, MAX_AUDIT_PAGE)))))
