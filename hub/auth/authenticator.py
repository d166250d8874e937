"""`Authenticator`: a bearer token and client address in, a `Principal` out, or a `hub.errors` refusal.

Checking a token costs one SHA-256 and one primary-key lookup whether or not it exists; failures back off the
client address (`LoginGuard`), since a guessed token names no identity to back off.
"""

from __future__ import annotations

import hmac
import logging

from hub.auth.guard import LoginGuard, LoginKind
from hub.auth.roles import Role
from hub.auth.tokens import Principal, token_digest, token_id, token_state
from hub.errors import AuthenticationError, TooManyAttemptsError
from hub.registry.access import AccessStore

log = logging.getLogger(__name__)


class Authenticator:
    """Checks API tokens against the registry."""

    def __init__(self, store: AccessStore, guard: LoginGuard) -> None:
        self.store = store
        self.guard = guard

    def authenticate(self, token: str | None, address: str) -> Principal:
        """The principal ``token`` stands for; `AuthenticationError` (401) or `TooManyAttemptsError` (429)."""
        if not token:
            raise AuthenticationError("this route needs an API token: Authorization: Bearer <token>")
        wait = self.guard.refused_for(LoginKind.API, address)
        if wait > 0:
            raise TooManyAttemptsError(f"too many failed logins from {address}; retry in {wait:.0f} s", wait)
        digest = token_digest(token)
        row = self.store.token(token_id(digest))
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            self._fail("unknown_token", address)
            raise AuthenticationError("invalid API token")
        state = token_state(row)
        if state != "active":
            self._fail(state, address)
            raise AuthenticationError(f"API token {row.id} is {state}")
        return Principal(row.id, row.name, Role(row.role))

    def _fail(self, reason: str, address: str) -> None:
        log.warning("refused API token from %s: %s", address, reason)
        self.guard.failed(LoginKind.API, reason, address)
