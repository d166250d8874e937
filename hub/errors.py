"""Errors of the hub, each with the HTTP status the REST API answers with (mapped in `hub.api`).

Exceptions::

    HubError                    500
     ├── NotFoundError          404  unknown model, version, device, deployment or artifact
     ├── ConflictError          409  the thing already exists, or the request contradicts current state
     ├── InvalidRequestError    422  well-formed but unacceptable input (bad semver, unknown target...)
     │    └── PayloadTooLargeError  413  a request body over the API's limit
     ├── ArtifactError          500  the artifact store cannot read or write (full disk, corrupt blob)
     ├── SigningError           500  the TUF repository cannot sign or load its keys
     └── MigrationError         500  the database schema cannot be brought to this hub's revision
"""

from __future__ import annotations


class HubError(Exception):
    """Base class for hub errors."""

    status_code = 500


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


class ArtifactError(HubError):
    """Reading or writing the artifact store failed."""


class SigningError(HubError):
    """The TUF repository could not sign or load keys."""


class MigrationError(HubError):
    """The database's schema cannot be brought to the revision this hub needs."""
