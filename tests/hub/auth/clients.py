"""REST clients carrying an API token, for every test that talks to the hub's app."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from hub.api import create_app
from hub.app import Hub
from hub.auth import Role, issue_token
from hub.registry import AccessStore


def token_for(hub: Hub, role: Role = Role.ADMIN, *, ttl_days: float | None = 1.0) -> str:
    """A fresh token of ``role`` stored in ``hub``'s registry."""
    return issue_token(AccessStore(hub.db), f"test {role}", role, ttl_days=ttl_days, created_by="test").token


def api_client(hub: Hub, role: Role = Role.ADMIN, *, app: FastAPI | None = None, **kwargs: Any) -> TestClient:
    """A test client of ``hub``'s REST app (``app`` when given: one per hub) sending a token of ``role``."""
    return bearer_client(app or create_app(hub), token_for(hub, role), **kwargs)


def bearer_client(app: FastAPI, token: str | None, **kwargs: Any) -> TestClient:
    """A test client of ``app`` sending ``token`` (none when None)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return TestClient(app, headers=headers, **kwargs)
