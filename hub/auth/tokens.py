"""API tokens: issued once in clear (``ef_`` and 32 random bytes), stored as a SHA-256 digest.

A token's id is the first hex digits of its digest: shown in listings and the audit log, used to look the token
up and to revoke it, and revealing nothing of the token. A plain digest is enough (no salt, no slow hash):
the tokens are random with 256 bits of entropy, so there is no dictionary to guess from.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from hub.auth.roles import Role
from hub.errors import InvalidRequestError
from hub.registry.access import AccessStore
from hub.registry.access_tables import ApiToken

__all__ = ["DEFAULT_TTL_DAYS", "IssuedToken", "Principal", "issue_token", "token_digest", "token_id"]

TOKEN_PREFIX = "ef_"
ID_CHARS = 12
MIN_TOKEN_CHARS = 32
DEFAULT_TTL_DAYS = 90.0
_DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: a token's id, name and role."""

    token_id: str
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: the clear value (shown once) and its stored row."""

    token: str
    row: ApiToken


def token_digest(token: str) -> str:
    """The SHA-256 hex digest a token is stored as."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(digest: str) -> str:
    """The id of the token with this digest."""
    return digest[:ID_CHARS]


def issue_token(
    store: AccessStore,
    name: str,
    role: Role,
    *,
    ttl_days: float | None = DEFAULT_TTL_DAYS,
    created_by: str,
    token: str | None = None,
) -> IssuedToken:
    """Create a token of ``role`` valid for ``ttl_days`` (None: no expiry); ``token`` supplies its value
    (at least 32 characters) instead of a random one."""
    if not name.strip():
        raise InvalidRequestError("a token needs a name")
    if ttl_days is not None and ttl_days <= 0:
        raise InvalidRequestError(f"token lifetime must be positive, got {ttl_days} days")
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise InvalidRequestError(f"a supplied token needs at least {MIN_TOKEN_CHARS} characters")
    value = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = token_digest(value)
    now = time.time()
    row = ApiToken(
        id=token_id(digest),
        name=name.strip(),
        role=role.value,
        token_sha256=digest,
        created_at=now,
        created_by=created_by,
        expires_at=None if ttl_days is None else now + ttl_days * _DAY_S,
    )
    return IssuedToken(value, store.add_token(row))


def token_state(row: ApiToken, now: float | None = None) -> str:
    """``active``, ``revoked`` or ``expired``."""
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= (time.time() if now is None else now):
        return "expired"
    return "active"
