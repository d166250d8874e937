"""FastAPI dependencies through which every route declares the roles it needs.

``@router.post("/rollouts", dependencies=allow(Role.OPERATOR))``: the request must carry a bearer token whose role
grants ``operator``; the principal is kept in ``request.state.principal`` for the audit log. The app provides the
`Authenticator` as ``app.state.authenticator``. The bearer scheme appears in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub.auth.authenticator import Authenticator
from hub.auth.roles import Role, permits
from hub.auth.tokens import Principal
from hub.errors import PermissionDeniedError

bearer = HTTPBearer(
    auto_error=False, scheme_name="apiToken", description="An API token (`edgefleet tokens create`), sent as Bearer."
)


def client_address(request: Request) -> str:
    """The client's address (the forwarded one when the proxy in front is trusted)."""
    return request.client.host if request.client else "unknown"


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency admitting a token whose role grants one of ``roles`` (admin grants all)."""
    needed = frozenset(roles)
    names = " or ".join(sorted(needed))

    def authorised(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
        authenticator: Authenticator = request.app.state.authenticator
        principal = authenticator.authenticate(
            credentials.credentials if credentials else None, client_address(request)
        )
        request.state.principal = principal
        if not permits(principal.role, needed):
            raise PermissionDeniedError(f"token {principal.token_id} ({principal.role}) may not do this: needs {names}")
        return principal

    return authorised


def allow(*roles: Role) -> list[Any]:
    """The ``dependencies=`` list of a route open to ``roles``."""
    return [Depends(require(*roles))]
