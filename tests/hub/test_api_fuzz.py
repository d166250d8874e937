"""REST input validation: hostile requests get a 4xx answer with a one-line reason, never a server error,
on SQLite and PostgreSQL. A hand-written corpus (NaN and Infinity, huge integers, NUL bytes, over-long
strings, deep nesting, oversized bodies) and a bounded schemathesis run with every check."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import ServerError

from hub.api import create_app
from hub.app import Hub
from hub.auth import Role, issue_token
from hub.config import HubSettings
from hub.registry import AccessStore

HUGE = 2**63
BODY_LIMIT = 256 * 1024
SCHEMATHESIS_EXAMPLES = 8
LONG = "x" * 10_000


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


#: (method, path, raw JSON body or None): each must be answered 4xx.
CORPUS: list[tuple[str, str, str | None]] = [
    # semver parts above 2^63 and other numbers the database cannot hold
    ("POST", "/models/m/versions", json.dumps({"version": f"{HUGE}.0.0"})),
    ("POST", "/models/m/versions", json.dumps({"version": f"1.{HUGE * HUGE}.0"})),
    ("POST", "/models/m/versions", json.dumps({"version": "1.0." + "9" * 400})),
    # NaN and Infinity (Python's json accepts them; they are not JSON)
    ("POST", "/rollouts", '{"model_version": "m:1.0.0", "max_failure_rate": NaN}'),
    ("POST", "/rollouts", '{"model_version": "m:1.0.0", "gate_soak_s": Infinity}'),
    ("POST", "/rollouts", '{"model_version": "m:1.0.0", "device_timeout_s": -Infinity}'),
    ("POST", "/rollouts", '{"model_version": "m:1.0.0", "success_threshold": NaN}'),
    ("POST", "/rollouts", json.dumps({"model_version": "m:1.0.0", "min_devices": HUGE})),
    ("POST", "/rollouts", json.dumps({"model_version": "m:1.0.0", "max_failures": -HUGE})),
    ("POST", "/rollouts", json.dumps({"model_version": "m:1.0.0", "gate_min_requests": HUGE * 4})),
    ("GET", "/models/m/versions/1.0.0/drift?last_hours=inf", None),
    ("GET", "/models/m/versions/1.0.0/drift?last_hours=nan", None),
    ("GET", "/models/m/versions/1.0.0/drift?last_hours=1e309", None),
    # NUL bytes in bodies, paths and queries (PostgreSQL refuses them in text)
    ("POST", "/models/m/versions", json.dumps({"version": "1.0.0", "notes": "a\x00b"})),
    ("POST", "/models/m%00x/versions", json.dumps({"version": "1.0.0"})),
    ("POST", "/devices", json.dumps({"device_id": "cam-1", "target": "rpi4-arm64", "labels": {"k\x00": "v"}})),
    ("POST", "/devices", json.dumps({"device_id": "cam\x00", "target": "rpi4-arm64"})),
    ("POST", "/deployments", json.dumps({"model": "m\x00", "version": "1.0.0", "device_ids": ["cam-1"]})),
    ("POST", "/rollouts", json.dumps({"model_version": "m\x00:1.0.0"})),
    ("POST", "/rollouts", json.dumps({"model_version": "m:1.0.0", "rollout_id": "r\x00"})),
    ("POST", "/rollouts", json.dumps({"model_version": "m:1.0.0", "selector": "site=\x00"})),
    ("GET", "/models/m%00/versions", None),
    ("GET", "/devices/cam%00", None),
    ("GET", "/deployments/d%00", None),
    ("GET", "/rollouts/r%00", None),
    ("GET", "/rollouts/r%00/canary", None),
    ("POST", "/rollouts/r%00/pause", None),
    ("GET", "/models/m%00/versions/1.0.0/variants", None),
    ("GET", "/models/m/versions/1.0.0%00/drift", None),
    ("GET", "/models/m/versions/1.0.0/drift?cohort=site%3D%00", None),
    ("GET", "/models/m%00/versions/1.0.0/telemetry/rollups", None),
    # over-long strings where the database column is bounded
    ("POST", f"/models/{'m' * 300}/versions", json.dumps({"version": "1.0.0"})),
    ("POST", "/models/m/versions", json.dumps({"version": "1.0.0-" + "a" * 100})),
    ("POST", "/models/m/versions", json.dumps({"version": "1.0.1", "notes": LONG * 10})),
    ("POST", "/devices", json.dumps({"device_id": "cam-1", "target": "rpi4-arm64", "labels": {"k": LONG}})),
    ("POST", "/devices", json.dumps({"device_id": "c" * 300, "target": "rpi4-arm64"})),
    ("POST", "/devices", json.dumps({"device_id": "cam-2", "target": LONG})),
    ("POST", "/deployments", json.dumps({"model": LONG, "version": "1.0.0", "device_ids": ["cam-1"]})),
    ("POST", "/deployments", json.dumps({"model": "m", "version": "1.0.0", "device_ids": [LONG]})),
    ("POST", "/rollouts", json.dumps({"model_version": "m:1.0.0", "rollout_id": LONG})),
    ("POST", "/rollouts", json.dumps({"model_version": f"{'m' * 300}:1.0.0"})),
    ("POST", "/rollouts", json.dumps({"model_version": "m:1.0.0", "waves": ",".join(["1"] * 5000)})),
    ("GET", f"/rollouts/{'r' * 5000}", None),
    ("GET", f"/devices/{'d' * 5000}", None),
    # deep nesting and wrong shapes
    ("POST", "/rollouts", '{"plan": ' + '{"a": ' * 5000 + "1" + "}" * 5001),
    ("POST", "/devices", '{"device_id": "cam-3", "target": "rpi4-arm64", "labels": ' + "[" * 5000 + "]" * 5000 + "}"),
    ("POST", "/rollouts", json.dumps({"plan": {"model": "m", "version": "1.0.0", "waves": [_nested(50)]}})),
    ("POST", "/deployments", json.dumps({"model": "m", "version": "1.0.0", "device_ids": [["cam-1"]]})),
    ("POST", "/models/m/versions", "[]"),
    ("POST", "/models/m/versions", '"1.0.0"'),
    ("POST", "/models/m/versions", "{"),
    ("POST", "/models/m/versions", b"\xff\xfe{}".decode("latin-1")),
    # access control: NUL, control characters, over-long and non-finite values
    ("POST", "/tokens", json.dumps({"name": "a\x00b", "role": "viewer"})),
    ("POST", "/tokens", json.dumps({"name": LONG, "role": "viewer"})),
    ("POST", "/tokens", json.dumps({"name": "n", "role": "root"})),
    ("POST", "/tokens", '{"name": "n", "role": "viewer", "ttl_days": Infinity}'),
    ("POST", "/tokens", '{"name": "n", "role": "viewer", "ttl_days": NaN}'),
    ("POST", "/tokens", json.dumps({"name": "n", "role": "viewer", "ttl_days": 1e300})),
    ("DELETE", f"/tokens/{'t' * 300}", None),
    ("DELETE", "/tokens/%00", None),
    ("GET", "/audit?since=nan", None),
    ("GET", "/audit?limit=100000", None),
    ("GET", "/audit?token_id=%00", None),
]


FUZZ_TOKEN = "ef_" + "f" * 43  # an admin token, stored in each test's hub


@pytest.fixture
def auth_headers() -> dict[str, str]:
    """Headers every request carries: an admin token, so hostile input reaches every route's handler."""
    return {"Authorization": f"Bearer {FUZZ_TOKEN}"}


@pytest.fixture
def client(database_url: str, tmp_path: Path, auth_headers: dict[str, str]) -> Iterator[TestClient]:
    settings = HubSettings(data_dir=tmp_path / "hub", database_url=database_url, api_max_body_bytes=BODY_LIMIT)
    hub = Hub(settings)
    hub.start()
    # a model version with a variant and a device, so hostile values get past "not found" to storage
    hub.registry.add_version("m", "1.0.0")
    bundle = hub.store.put_bytes(b"bundle")
    hub.registry.add_variant(
        "m",
        "1.0.0",
        target="rpi4-arm64",
        runtime="litert",
        precision="fp32",
        artifact_sha256=bundle,
        size_bytes=6,
        bundle_sha256=bundle,
        bundle_size=6,
        tuf_target="bundles/m/1.0.0/rpi4-arm64.zip",
    )
    hub.registry.provision_device("cam-1", "rpi4-arm64")
    issue_token(AccessStore(hub.db), "fuzz", Role.ADMIN, created_by="test", token=FUZZ_TOKEN)
    try:
        with TestClient(create_app(hub), raise_server_exceptions=False, headers=auth_headers) as test_client:
            yield test_client
    finally:
        hub.stop()


def test_hostile_requests_get_a_client_error(client: TestClient) -> None:
    answers = []
    for method, path, body in CORPUS:
        response = client.request(
            method,
            path,
            content=body.encode("utf-8", "surrogateescape") if body is not None else None,
            headers={"content-type": "application/json"},
        )
        answers.append((response.status_code, method, path[:80], (body or "")[:80], response.text[:200]))
    import sys

    print(*answers, sep="\n", file=sys.stderr)
    wrong = [a for a in answers if not 400 <= a[0] < 500]
    assert not wrong, "\n".join(map(str, wrong))


def test_oversized_bodies_are_refused_before_they_are_read(client: TestClient) -> None:
    big = json.dumps({"version": "1.0.1", "notes": "x" * BODY_LIMIT}).encode()
    declared = client.post("/models/m/versions", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert declared.json() == {"error": "PayloadTooLargeError", "detail": f"request body exceeds {BODY_LIMIT} bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        yield big[:1000]
        yield big[1000:]

    streamed = client.post("/models/m/versions", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"] == "PayloadTooLargeError"
    assert client.get("/models/m/versions").json()[0]["version"] == "1.0.0"  # nothing was stored


def test_refusals_are_one_line_and_never_echo_the_input(client: TestClient) -> None:
    response = client.post(
        "/rollouts",
        content=b'{"model_version": "m:1.0.0", "max_failure_rate": NaN}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json() == {
        "error": "InvalidRequestError",
        "detail": "body.max_failure_rate: Input should be a finite number",
    }


def test_schemathesis_finds_no_server_error(client: TestClient, auth_headers: dict[str, str]) -> None:
    """Every operation, positive and negative cases, every check; a few examples each to stay fast."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app, headers=auth_headers)
    server_errors: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        # A path of free-form strings has no invalid value: hypothesis would search for one in vain.
        negative = bool(len(operation.body) or len(operation.query))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if negative else (GenerationMode.POSITIVE,):

            @settings(
                max_examples=SCHEMATHESIS_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                try:
                    case.call_and_validate(headers=auth_headers)
                except BaseException as exc:  # a group of check failures: keep the server errors, go on
                    failures = getattr(exc, "exceptions", [exc])
                    server_errors.extend(f"{case.operation.label}: {f}" for f in failures if isinstance(f, ServerError))

            with contextlib.suppress(Unsatisfiable):  # operations without inputs have no negative cases
                run()
    assert not server_errors, "\n".join(server_errors[:10])
