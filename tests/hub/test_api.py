"""REST API: provisioning, versions, errors mapped to HTTP status, OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.app import Hub
from hub.config import HubSettings
from tests.hub.auth.clients import api_client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))
    hub.start()
    try:
        with api_client(hub) as test_client:
            yield test_client
    finally:
        hub.stop()


def test_provision_register_and_list(client: TestClient) -> None:
    created = client.post("/devices", json={"device_id": "cam-1", "target": "rpi4-arm64", "labels": {"site": "a"}})
    assert created.status_code == 201
    body = created.json()
    assert body["secret"] and '"_type":"root"' in body["trust_root"].replace(" ", "")
    listed = client.get("/devices").json()
    assert [d["id"] for d in listed] == ["cam-1"] and "credential_hash" not in listed[0]
    assert client.post("/models/digits/versions", json={"version": "1.0.0"}).status_code == 201
    assert client.get("/models").json() == [{"name": "digits", "description": "", "versions": ["1.0.0"]}]
    assert client.get("/health").json()["broker_connected"] is True


def test_errors_map_to_http_status(client: TestClient) -> None:
    assert client.get("/devices/ghost").status_code == 404
    assert client.post("/models/digits/versions", json={"version": "one"}).status_code == 422
    client.post("/models/digits/versions", json={"version": "1.0.0"})
    conflict = client.post("/models/digits/versions", json={"version": "1.0.0"})
    assert conflict.status_code == 409 and conflict.json()["error"] == "ConflictError"
    assert client.post("/devices", json={"device_id": "x", "target": "toaster"}).status_code == 422
    missing_variant = client.post("/deployments", json={"model": "digits", "version": "1.0.0", "device_ids": ["x"]})
    assert missing_variant.status_code == 404


def test_openapi_document_lists_the_resources(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/health", "/models", "/devices", "/deployments", "/models/{name}/versions/{version}/variants"):
        assert path in paths
