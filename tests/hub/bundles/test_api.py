"""``/bundles`` on a real server: device credentials required, ranges (206, 416, If-Range) with the digest as
ETag, only bundles published for the device's target, no path escapes the route; on S3 a redirect to a short-lived
link that serves ranges itself."""

from __future__ import annotations

import base64
import http.client
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fleet.wire.chunk_index import ChunkIndex
from hub.api import create_app
from hub.app import Hub
from hub.auth import Role
from hub.bundles.chunking import chunk_index
from hub.config import HubSettings
from tests.agent.conftest import GOLDEN_X, GOLDEN_Y, MODEL_BYTES, TARGET, manifest
from tests.http_server import running_server
from tests.hub.auth.clients import token_for
from tests.s3_server import create_bucket, s3_server


@dataclass
class Served:
    """A started hub with one published bundle, its REST API on a real server, and two devices' logins."""

    hub: Hub
    address: str
    sha256: str
    data: bytes
    device: str  # Basic credentials of a device of the bundle's target
    stranger: str  # ... of a device of another target

    def get(self, path: str, auth: str | None = None, **headers: str) -> httpx.Response:
        extra = {"Authorization": auth} if auth else {}
        return httpx.get(f"http://{self.address}{path}", headers={**extra, **headers}, follow_redirects=False)


def basic(device_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode()


@contextmanager
def serving(root: Path, artifact_store: str | None = None) -> Iterator[Served]:
    """A hub under ``root`` with the tiny model published, its API served on a real port."""
    hub = Hub(HubSettings(data_dir=root, artifact_store=artifact_store))
    hub.start()
    try:
        model = root / "model.onnx"
        model.write_bytes(MODEL_BYTES)
        published = hub.publish(manifest("1.0.0"), model, GOLDEN_X, GOLDEN_Y)
        _, secret = hub.registry.provision_device("cam-1", TARGET)
        _, other = hub.registry.provision_device("pi-1", "rpi4-arm64")
        data = hub.store.read(published.bundle_sha256)
        with running_server(create_app(hub)) as address:
            yield Served(hub, address, published.bundle_sha256, data, basic("cam-1", secret), basic("pi-1", other))
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("hub")) as s:
        yield s


def test_a_device_downloads_its_bundle_whole_and_in_ranges(served: Served) -> None:
    path, size = f"/bundles/{served.sha256}", len(served.data)
    whole = served.get(path, served.device)
    assert whole.status_code == 200 and whole.content == served.data
    assert whole.headers["etag"] == f'"{served.sha256}"' and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["cache-control"].startswith("private")
    part = served.get(path, served.device, Range="bytes=100-")
    assert part.status_code == 206 and part.content == served.data[100:]
    assert part.headers["content-range"] == f"bytes 100-{size - 1}/{size}"
    middle = served.get(path, served.device, Range="bytes=10-19", **{"If-Range": whole.headers["etag"]})
    assert middle.status_code == 206 and middle.content == served.data[10:20]
    stale = served.get(path, served.device, Range="bytes=10-19", **{"If-Range": '"another"'})
    assert stale.status_code == 200 and stale.content == served.data  # the ETag changed: all of it again
    past = served.get(path, served.device, Range=f"bytes={size}-")
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    index = served.get(f"/bundles/chunk-index.{served.sha256}", served.device)
    assert index.status_code == 200 and ChunkIndex.decode(index.content) == chunk_index(served.data)


def test_credentials_are_required_and_checked(served: Served) -> None:
    path = f"/bundles/{served.sha256}"
    anonymous = served.get(path)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    assert "Authorization: Basic" in anonymous.json()["detail"]
    assert served.get(path, basic("cam-1", "wrong")).status_code == 401
    assert served.get(path, basic("ghost", "wrong")).status_code == 401
    assert served.get(path, "Basic not-base64!").status_code == 401
    assert served.get(path, "Bearer ef_not_a_token").status_code == 401
    provisioner = "Bearer " + token_for(served.hub, Role.PROVISIONER)
    assert served.get(path, provisioner).status_code == 403
    viewer = served.get(path, "Bearer " + token_for(served.hub, Role.VIEWER))  # a CDN pulling from its origin
    assert viewer.status_code == 200 and viewer.content == served.data
    assert viewer.headers["cache-control"].startswith("public")  # the CDN may keep it


def test_only_bundles_published_for_the_devices_target_are_served(served: Served) -> None:
    assert served.get(f"/bundles/{served.sha256}", served.device).status_code == 200
    assert served.get(f"/bundles/{served.sha256}", served.stranger).status_code == 404  # built for other hardware
    assert served.get(f"/bundles/chunk-index.{served.sha256}", served.stranger).status_code == 404
    variant = served.hub.registry.variant_by_bundle(served.sha256)
    assert variant is not None and served.hub.store.size(variant.artifact_sha256) > 0
    assert served.get(f"/bundles/{variant.artifact_sha256}", served.device).status_code == 404  # a stored model
    assert served.get(f"/bundles/{'0' * 64}", served.device).status_code == 404


ESCAPES = (
    "/bundles/..%2Fhub.secret",
    "/bundles/%2e%2e%2fhub.secret",
    "/bundles/..%2F..%2F..%2Fetc%2Fpasswd",
    "/bundles/../hub.secret",
    "/bundles/%2e%2e/registry.db",
    "/bundles/chunk-index.%2e%2e%2fhub.secret",
    "/bundles/sha256%2F{ab}%2F{sha}",
    "/bundles/{sha}%2F..%2F..%2F..%2Fhub.secret",
    "/bundles/{sha}/../../hub.secret",
    "/bundles/%00{sha}",
)


def _raw_get(served: Served, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(served.address, timeout=10)  # sends the path as written
    try:
        connection.request("GET", path, headers={"Authorization": served.device})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_no_path_escapes_the_route(served: Served) -> None:
    assert _raw_get(served, f"/bundles/{served.sha256}") == (200, served.data)  # the same request, a good name
    secret = (served.hub.settings.data_dir / "hub.secret").read_bytes()
    for escape in ESCAPES:
        status, body = _raw_get(served, escape.format(sha=served.sha256, ab=served.sha256[:2]))
        assert status in (404, 422), (escape, status)
        assert secret not in body and served.data not in body and b"root:" not in body


def test_on_s3_the_hub_answers_a_short_lived_link_that_serves_ranges(tmp_path: Path) -> None:
    with s3_server() as endpoint:
        create_bucket(endpoint, "bundles")
        with serving(tmp_path / "hub", f"s3://bundles/fleet?endpoint={endpoint}") as served:
            path = f"/bundles/{served.sha256}"
            assert served.get(path).status_code == 401
            assert served.get(path, served.stranger).status_code == 404
            moved = served.get(path, served.device)
            assert moved.status_code == 302 and moved.headers["cache-control"] == "no-store"
            link = moved.headers["location"]
            assert link.startswith(f"{endpoint}/bundles/fleet/sha256/{served.sha256}?") and "Expires=" in link
            size = len(served.data)
            part = httpx.get(link, headers={"Range": "bytes=100-"})  # no credentials: the link is the permission
            assert part.status_code == 206 and part.content == served.data[100:]
            assert part.headers["content-range"] == f"bytes 100-{size - 1}/{size}"
            assert httpx.get(link, headers={"Range": f"bytes={size}-"}).status_code == 416
            index = served.get(f"/bundles/chunk-index.{served.sha256}", served.device)
            assert index.status_code == 200 and ChunkIndex.decode(index.content) == chunk_index(served.data)
