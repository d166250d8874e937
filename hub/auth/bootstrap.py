"""The first admin token, created when the hub starts: from ``EDGEFLEET_ADMIN_TOKEN`` when set (stored once), or a
random one when no token exists yet (the caller prints it once)."""

from __future__ import annotations

from collections.abc import Mapping

from hub.auth.roles import Role
from hub.auth.tokens import IssuedToken, issue_token, token_digest, token_id
from hub.registry.access import AccessStore

ADMIN_TOKEN_ENV = "EDGEFLEET_ADMIN_TOKEN"


def bootstrap_admin_token(store: AccessStore, environ: Mapping[str, str]) -> IssuedToken | None:
    """Create the first admin token if one is due; None when nothing was created.

    A token supplied in the environment is stored the first time it is seen and never re-created, so revoking it
    (or letting it expire) holds across restarts.
    """
    supplied = environ.get(ADMIN_TOKEN_ENV)
    if supplied:
        if store.token(token_id(token_digest(supplied))) is not None:
            return None
        return issue_token(store, f"admin ({ADMIN_TOKEN_ENV})", Role.ADMIN, created_by="bootstrap", token=supplied)
    if store.token_count() == 0:
        return issue_token(store, "admin (first start)", Role.ADMIN, created_by="bootstrap")
    return None
