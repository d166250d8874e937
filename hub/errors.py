"""Errors of the hub, each with the HTTP status the REST API answers with (mapped in `hub.api`).

Exceptions::

    HubError                    500
     ├── NotFoundError          404  unknown model, version, device, deployment or artifact
     ├── ConflictError          409  the thing already exists, or the request contradicts current state
     ├── InvalidRequestError    422  well-formed but unacceptable input (bad semver, unknown target...)
     │    └── PayloadTooLargeError  413  a request body over the API's limit
     ├── AuthenticationError    401  no bearer token, or one that is unknown, revoked or expired
     │    └── DeviceAuthenticationError  401  no or wrong device credentials (HTTP Basic, bundle downloads)
     ├── PermissionDeniedError  403  the token's role does not allow the route
     ├── TooManyAttemptsError   429  this address failed too often: refused until ``retry_after_s`` passed
     ├── ArtifactError          500  the artifact store cannot read or write (full disk, corrupt blob)
     ├── SigningError           500  the TUF repository cannot sign or load its keys
     └── MigrationError         500  the database schema cannot be brought to this hub's revision
"""

from __future__ import annotations

import math


class HubError(Exception):
    """Base class for hub errors."""

    status_code = 500

    def headers(self) -> dict[str, str]:
        """HTTP headers the REST answer carries with this error."""
        return {}


class NotFoundError(HubError):
    """The named object does not exist."""

    status_code = 404


class ConflictError(HubError):
    """The object exists already, or the request conflicts with its current state."""

    status_code = 409


class InvalidRequestError(HubError):
    """The request is well-formed but cannot be accepted."""

    status_code = 422


class PayloadTooLargeError(InvalidRequestError):
    """The request body is larger than the API accepts."""

    status_code = 413


class AuthenticationError(HubError):
    """The request carries no valid API token."""

    status_code = 401

    def headers(self) -> dict[str, str]:
        """Tell the client which scheme to use (RFC 6750)."""
        return {"WWW-Authenticate": "Bearer"}


class DeviceAuthenticationError(AuthenticationError):
    """A device route without the device's id and secret, or with wrong ones."""

    def headers(self) -> dict[str, str]:
        """Devices log in with HTTP Basic (their id and broker secret); API tokens are Bearer, as elsewhere."""
        return {"WWW-Authenticate": 'Basic realm="edgefleet devices", Bearer'}


class PermissionDeniedError(HubError):
    """The token is valid but its role does not allow this."""

    status_code = 403


class TooManyAttemptsError(HubError):
    """Refused without checking: this login failed too often lately."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """When to try again, in whole seconds."""
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class SettingsError(HubError):
    """A hub setting (flag, ``EDGEFLEET_*`` variable or TOML file) that is missing, malformed or out of range."""


class ArtifactError(HubError):
    """Reading or writing the artifact store failed."""


class SigningError(HubError):
    """The TUF repository could not sign or load keys."""


class MigrationError(HubError):
    """The database's schema cannot be brought to the revision this hub needs."""
