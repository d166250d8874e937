"""Access control of the hub: API tokens with roles, the dependency each route declares its roles with, the audit
log of changes, failed-login back-off for tokens and device broker logins, and device logins on HTTP routes.

Errors are `hub.errors` ones: `AuthenticationError` (401), `PermissionDeniedError` (403),
`TooManyAttemptsError` (429).
"""

from hub.auth.audit import AuditMiddleware
from hub.auth.authenticator import Authenticator
from hub.auth.backoff import BackoffPolicy, FailureBackoff
from hub.auth.bootstrap import ADMIN_TOKEN_ENV, bootstrap_admin_token
from hub.auth.dependencies import allow, bearer, require
from hub.auth.devices import DeviceAuthenticator
from hub.auth.guard import LoginBackoffSettings, LoginGuard, LoginKind
from hub.auth.roles import Role
from hub.auth.tokens import DEFAULT_TTL_DAYS, IssuedToken, Principal, issue_token, token_state

__all__ = [
    "ADMIN_TOKEN_ENV",
    "DEFAULT_TTL_DAYS",
    "AuditMiddleware",
    "Authenticator",
    "BackoffPolicy",
    "DeviceAuthenticator",
    "FailureBackoff",
    "IssuedToken",
    "LoginBackoffSettings",
    "LoginGuard",
    "LoginKind",
    "Principal",
    "Role",
    "allow",
    "bearer",
    "bootstrap_admin_token",
    "issue_token",
    "require",
    "token_state",
]
