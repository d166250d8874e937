"""The audit log: every change by a token (done, refused by role, failed) with who, what, when, from where and the
outcome; reads, anonymous requests and inference are not written; only admins read it."""

from __future__ import annotations

from pathlib import Path

import pytest
import time_machine
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from hub.app import Hub
from hub.auth import Role
from hub.config import HubSettings
from hub.registry import AccessStore
from tests.hub.auth.clients import api_client, bearer_client


def test_changes_are_written_with_who_what_when_where_and_outcome(hub: Hub, app: FastAPI) -> None:
    admin = api_client(hub, app=app)
    operator = api_client(hub, Role.OPERATOR, app=app, client=("192.0.2.10", 5000))
    viewer = api_client(hub, Role.VIEWER, app=app)
    with time_machine.travel(1_700_000_000, tick=False):
        assert operator.post("/devices", json={"device_id": "cam-1", "target": "rpi4-arm64"}).status_code == 201
        assert operator.post("/rollouts/ghost/pause").status_code == 404
        assert viewer.post("/models/digits/versions", json={"version": "1.0.0"}).status_code == 403
    operator.get("/devices")  # reads are not changes
    TestClient(app).post("/devices", json={})  # anonymous: refused, not written
    entries = admin.get("/audit").json()
    assert [(e["token_name"], e["method"], e["route"], e["path"], e["status"]) for e in entries] == [
        ("test viewer", "POST", "/models/{name}/versions", "/models/digits/versions", 403),
        ("test operator", "POST", "/rollouts/{rollout_id}/{command}", "/rollouts/ghost/pause", 404),
        ("test operator", "POST", "/devices", "/devices", 201),
    ]
    operator_entry = entries[-1]
    assert operator_entry["client"] == "192.0.2.10" and operator_entry["role"] == "operator"
    assert operator_entry["at"] == 1_700_000_000
    only_viewer = admin.get("/audit", params={"token_id": entries[0]["token_id"]}).json()
    assert [e["status"] for e in only_viewer] == [403]
    assert admin.get("/audit", params={"limit": 1}).json() == entries[:1]


def test_only_admins_read_the_audit_log(hub: Hub, app: FastAPI) -> None:
    for role in (Role.OPERATOR, Role.VIEWER, Role.PROVISIONER):
        assert api_client(hub, role, app=app).get("/audit").status_code == 403
    assert TestClient(app).get("/audit").status_code == 401


def test_a_trusted_proxy_names_the_client_and_others_cannot(hub: Hub, app: FastAPI) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.50"}
    via_proxy = api_client(hub, Role.OPERATOR, app=app, client=("10.9.9.9", 1))  # conftest trusts 10.9.9.9
    direct = api_client(hub, Role.OPERATOR, app=app, client=("192.0.2.77", 1))
    via_proxy.post("/devices", json={"device_id": "a", "target": "rpi4-arm64"}, headers=forwarded)
    direct.post("/devices", json={"device_id": "b", "target": "rpi4-arm64"}, headers=forwarded)
    assert [e.client for e in AccessStore(hub.db).audit_entries()] == ["192.0.2.77", "203.0.113.50"]


def test_token_management_is_audited(hub: Hub, app: FastAPI) -> None:
    admin = api_client(hub, app=app)
    created = admin.post("/tokens", json={"name": "ci", "role": "viewer"}).json()
    admin.delete(f"/tokens/{created['id']}")
    bearer_client(app, created["token"]).get("/models")
    routes = [(e["method"], e["route"], e["status"]) for e in admin.get("/audit").json()]
    assert routes == [("DELETE", "/tokens/{token_id}", 200), ("POST", "/tokens", 201)]


def test_a_trusted_proxy_must_be_an_address_or_network(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"trusted proxy 'proxy\.local' is not an IP address"):
        HubSettings(data_dir=tmp_path, trusted_proxies=["10.0.0.0/8", "proxy.local"])
