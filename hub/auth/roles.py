"""Roles of API tokens and what each one may do.

Each route names the roles it needs (`hub.auth.dependencies.allow`); a token passes when its role grants one of
them. ``admin`` grants everything, ``operator`` also provisions and reads, ``viewer`` only reads,
``provisioner`` only creates and reads devices.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """A token's role."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    PROVISIONER = "provisioner"


GRANTS: dict[Role, frozenset[Role]] = {
    Role.ADMIN: frozenset(Role),
    Role.OPERATOR: frozenset({Role.OPERATOR, Role.PROVISIONER, Role.VIEWER}),
    Role.VIEWER: frozenset({Role.VIEWER}),
    Role.PROVISIONER: frozenset({Role.PROVISIONER}),
}


def permits(role: Role, needed: frozenset[Role]) -> bool:
    """Whether a token of ``role`` may use a route that needs one of ``needed``."""
    return bool(GRANTS[role] & needed)
