"""Every route of the hub's REST app declares its roles: anonymous and bad tokens get 401, the wrong role 403,
bad tokens back the address off, and the OpenAPI document carries the bearer scheme."""

from __future__ import annotations

import re
from typing import Any

import pytest
import time_machine
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hub.app import Hub
from hub.auth import Role
from hub.registry.tables import DEVICE_SECRET_FIELDS
from tests.hub.auth.clients import api_client, bearer_client, token_for

PUBLIC = {("GET", "/health")}
DEVICE_ROUTES = ("/bundles/",)  # devices log in with HTTP Basic; API tokens are accepted too


def _operations(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document, path parameters filled in."""
    paths = app.openapi()["paths"]
    return sorted(
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, item in paths.items()
        for method in item
        if (method.upper(), path) not in PUBLIC
    )


def _call(client: TestClient, method: str, path: str) -> Any:
    return client.request(method, path, json={} if method in {"POST", "PUT", "PATCH"} else None)


def test_every_route_but_health_refuses_anonymous_and_unknown_tokens(hub: Hub, app: FastAPI) -> None:
    operations = _operations(app)
    assert len(operations) > 30  # the whole app, routers included
    anonymous = TestClient(app)
    forged = bearer_client(app, "ef_forged", client=("10.0.0.1", 1))
    for method, path in operations:
        answer = _call(anonymous, method, path)
        assert answer.status_code == 401, (method, path, answer.text)
        device_route = path.startswith(DEVICE_ROUTES)
        assert answer.headers["WWW-Authenticate"] == (
            'Basic realm="edgefleet devices", Bearer' if device_route else "Bearer"
        )
    for method, path in operations[:3]:
        assert _call(forged, method, path).status_code == 401
    health = anonymous.get("/health")
    assert health.status_code == 200 and set(health.json()) == {"status", "broker_connected"}


def test_openapi_document_declares_the_bearer_scheme_on_every_operation(hub: Hub, app: FastAPI) -> None:
    document = TestClient(app).get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (`edgefleet tokens create`), sent as Bearer.",
    }
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.startswith(DEVICE_ROUTES):
                assert operation["security"] == [{"deviceLogin": []}, {"apiToken": []}], (method, path)
            elif (method.upper(), path) not in PUBLIC:
                assert operation["security"] == [{"apiToken": []}], (method, path)


def test_a_viewer_reads_but_changes_nothing(hub: Hub, app: FastAPI) -> None:
    viewer = api_client(hub, Role.VIEWER, app=app)
    changes = [(m, p) for m, p in _operations(app) if m != "GET" and not p.startswith("/v2/")]
    assert {("POST", "/devices"), ("POST", "/rollouts"), ("POST", "/deployments"), ("DELETE", "/tokens/x")} <= set(
        changes
    )
    for method, path in changes:
        assert _call(viewer, method, path).status_code == 403, (method, path)
    assert viewer.get("/models").status_code == 200 and viewer.get("/devices").status_code == 200
    assert viewer.get("/audit").status_code == 403 and viewer.get("/tokens").status_code == 403


def test_a_provisioner_provisions_devices_and_nothing_else(hub: Hub, app: FastAPI) -> None:
    provisioner = api_client(hub, Role.PROVISIONER, app=app)
    created = provisioner.post("/devices", json={"device_id": "cam-1", "target": "rpi4-arm64"})
    assert created.status_code == 201 and created.json()["secret"]
    assert [d["id"] for d in provisioner.get("/devices").json()] == ["cam-1"]
    plan = {"model_version": "digits:1.0.0", "rollout_id": "ro-1"}
    assert provisioner.post("/rollouts", json=plan).status_code == 403
    deploy = {"model": "digits", "version": "1.0.0", "device_ids": ["cam-1"]}
    assert provisioner.post("/deployments", json=deploy).status_code == 403
    assert provisioner.post("/models/digits/versions", json={"version": "1.0.0"}).status_code == 403
    assert provisioner.get("/models").status_code == 403 and provisioner.get("/metrics").status_code == 403


def test_an_operator_runs_the_fleet_but_not_access_control(hub: Hub, app: FastAPI) -> None:
    operator = api_client(hub, Role.OPERATOR, app=app)
    assert operator.post("/models/digits/versions", json={"version": "1.0.0"}).status_code == 201
    assert operator.post("/devices", json={"device_id": "cam-1", "target": "rpi4-arm64"}).status_code == 201
    refused = operator.post("/rollouts", json={"model_version": "digits:1.0.0"})
    assert refused.status_code == 422 and "no published variants" in refused.json()["detail"]  # past the role check
    assert operator.get("/audit").status_code == 403
    assert operator.post("/tokens", json={"name": "me", "role": "admin"}).status_code == 403


def test_device_listings_carry_no_credentials_or_hashes(hub: Hub, app: FastAPI) -> None:
    admin = api_client(hub, app=app)
    secret = admin.post("/devices", json={"device_id": "cam-1", "target": "rpi4-arm64"}).json()["secret"]
    row = hub.registry.get_device("cam-1")
    for answer in (admin.get("/devices"), admin.get("/devices/cam-1")):
        assert answer.status_code == 200
        assert not DEVICE_SECRET_FIELDS & set(answer.json()[0] if isinstance(answer.json(), list) else answer.json())
        for value in (secret, row.credential_hash, row.broker_hash, row.nats_hash):
            assert value and value not in answer.text


def test_revoked_and_expired_tokens_are_refused(hub: Hub, app: FastAPI) -> None:
    admin = api_client(hub, app=app)
    with time_machine.travel(1_000_000, tick=False) as clock:
        created = admin.post("/tokens", json={"name": "ci", "role": "viewer", "ttl_days": 1})
        assert created.status_code == 201
        ci = bearer_client(app, created.json()["token"])
        assert ci.get("/models").status_code == 200
        clock.shift(86_400)
        expired = ci.get("/models")
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    second = admin.post("/tokens", json={"name": "ci2", "role": "viewer"}).json()
    ci2 = bearer_client(app, second["token"])
    assert ci2.get("/models").status_code == 200
    assert admin.delete(f"/tokens/{second['id']}").json()["state"] == "revoked"
    revoked = ci2.get("/models")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    listed = {t["id"]: t for t in admin.get("/tokens").json()}
    assert listed[second["id"]]["state"] == "revoked" and "token_sha256" not in listed[second["id"]]
    assert "token" not in listed[second["id"]]


def test_bad_tokens_back_the_address_off_and_are_counted(hub: Hub, app: FastAPI) -> None:
    good = token_for(hub, Role.VIEWER)
    guesser = bearer_client(app, "ef_guess", client=("203.0.113.7", 1))
    same_address = bearer_client(app, good, client=("203.0.113.7", 2))
    elsewhere = bearer_client(app, good, client=("198.51.100.1", 1))
    with time_machine.travel(1_000_000, tick=False) as clock:
        assert [guesser.get("/models").status_code for _ in range(4)] == [401, 401, 401, 401]
        refused = same_address.get("/models")  # even a good token: nothing is checked while backed off
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
        assert elsewhere.get("/models").status_code == 200
        clock.shift(30)
        assert same_address.get("/models").status_code == 200
    samples = {
        labels: hub.monitoring.prometheus.get_sample_value(
            "edgefleet_login_failures_total", {"kind": "api", "reason": labels}
        )
        for labels in ("unknown_token", "backed_off")
    }
    assert samples == {"unknown_token": 4, "backed_off": 1}


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer "])
def test_malformed_authorization_headers_are_401(app: FastAPI, header: str) -> None:
    assert TestClient(app, headers={"Authorization": header}).get("/models").status_code == 401


def test_whoami_names_the_token_for_every_role(hub: Hub, app: FastAPI) -> None:
    for role in Role:
        me = api_client(hub, role, app=app).get("/auth/whoami").json()
        assert (me["name"], me["role"]) == (f"test {role}", role.value) and len(me["token_id"]) == 12
