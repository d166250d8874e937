"""REST routes for access control: who a token is (any role), and for admins API tokens (create, list, revoke) and
the audit log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from hub.auth.dependencies import allow, require
from hub.auth.roles import Role
from hub.auth.tokens import DEFAULT_TTL_DAYS, Principal, issue_token, token_state
from hub.registry.access import MAX_AUDIT_PAGE, AccessStore
from hub.registry.access_tables import ApiToken


class TokenIn(BaseModel):
    """A token to create; ``ttl_days`` None makes one that never expires."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]*$")
    role: Role
    ttl_days: float | None = Field(default=DEFAULT_TTL_DAYS, gt=0, le=3650)


TOKEN_ID_PATTERN = r"^[0-9a-z]{1,16}$"  # a digest prefix, or ``cli`` in the audit log
TokenId = Annotated[str, Path(pattern=TOKEN_ID_PATTERN)]


def token_view(row: ApiToken) -> dict[str, Any]:
    """A token as listed: everything but its digest, plus its state."""
    return row.model_dump(exclude={"token_sha256"}) | {"state": token_state(row)}


def create_access_router(store: AccessStore) -> APIRouter:
    """Routes ``/auth/whoami``, ``/tokens`` and ``/audit`` over ``store``."""
    router = APIRouter(tags=["access"])

    @router.get("/auth/whoami")
    def whoami(principal: Principal = Depends(require(*Role))) -> dict[str, Any]:
        """The token this request carries: id, name and role (the console shows it and hides what the role
        may not do)."""
        return {"token_id": principal.token_id, "name": principal.name, "role": principal.role.value}

    @router.get("/tokens", dependencies=allow(Role.ADMIN))
    def tokens() -> list[dict[str, Any]]:
        """All tokens (never their values), oldest first."""
        return [token_view(row) for row in store.tokens()]

    @router.post("/tokens", status_code=201)
    def create_token(body: TokenIn, principal: Principal = Depends(require(Role.ADMIN))) -> dict[str, Any]:
        """Create a token; its value appears only in this answer."""
        issued = issue_token(
            store, body.name, body.role, ttl_days=body.ttl_days, created_by=f"token:{principal.token_id}"
        )
        return token_view(issued.row) | {"token": issued.token}

    @router.delete("/tokens/{token_id}", dependencies=allow(Role.ADMIN))
    def revoke_token(token_id: TokenId) -> dict[str, Any]:
        """Revoke a token at once (idempotent)."""
        return token_view(store.revoke_token(token_id))

    @router.get("/audit", dependencies=allow(Role.ADMIN))
    def audit(
        limit: int = Query(default=100, ge=1, le=MAX_AUDIT_PAGE),
        since: float | None = Query(
            default=None, allow_inf_nan=False, description="only entries at or after this time"
        ),
        token_id: str | None = Query(default=None, pattern=TOKEN_ID_PATTERN, description="only this token's entries"),
    ) -> list[dict[str, Any]]:
        """The audit log of changes, newest first."""
        return [e.model_dump() for e in store.audit_entries(limit=limit, since=since, token_id=token_id)]

    return router
