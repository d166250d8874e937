"""The V2 HTTP surface end to end: metadata, health, infer (JSON and binary), errors mapped to status
codes, repository load/unload, metrics, and batching, overload and timeouts over real HTTP."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from hub.serving import Backend, ModelSpec, StaticRepository, TensorSpec, create_app
from tests.http_server import running_server
from tests.hub.serving.conftest import (
    IN_FEATURES,
    OUT_FEATURES,
    GatedBackend,
    TinyModels,
    fake_spec,
    sample,
)

X = np.random.default_rng(1).standard_normal((2, IN_FEATURES)).astype(np.float32)


def infer_body(x: np.ndarray, name: str = "x", **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}],
        **extra,
    }


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def client(tiny_models: TinyModels, registry: CollectorRegistry) -> Iterator[TestClient]:
    specs = [
        ModelSpec(name="mlp", version="1", path=tiny_models.onnx),
        ModelSpec(
            name="mlp",
            version="2",
            path=tiny_models.torchscript,
            inputs=(TensorSpec(name="INPUT__0", shape=(-1, IN_FEATURES)),),
            outputs=(TensorSpec(name="OUTPUT__0", shape=(-1, OUT_FEATURES)),),
        ),
    ]
    lazy = ModelSpec(name="lazy", version="7", path=tiny_models.exported)
    app = create_app(specs, registry=registry, repository=StaticRepository([*specs, lazy]))
    with TestClient(app) as c:
        yield c


def test_server_health_and_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "edgefleet"
    assert "binary_tensor_data" in meta["extensions"] and "model_repository" in meta["extensions"]


def test_model_metadata_per_version(client: TestClient) -> None:
    latest = client.get("/v2/models/mlp").json()
    assert latest["versions"] == ["1", "2"]
    assert latest["platform"] == "pytorch_libtorch"  # version 2 is the latest
    v1 = client.get("/v2/models/mlp/versions/1").json()
    assert v1["platform"] == "onnxruntime_onnx"
    assert v1["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, IN_FEATURES]}]
    assert v1["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, OUT_FEATURES]}]
    assert client.get("/v2/models/mlp/versions/1/ready").json()["ready"] is True


def test_infer_json_against_a_version(client: TestClient, tiny_models: TinyModels) -> None:
    response = client.post("/v2/models/mlp/versions/1/infer", json=infer_body(X, id="abc"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "mlp" and body["model_version"] == "1" and body["id"] == "abc"
    (out,) = body["outputs"]
    assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [2, OUT_FEATURES]
    got = np.asarray(out["data"], np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, tiny_models.reference(X), rtol=1e-5, atol=1e-6)


def test_infer_without_version_uses_the_latest(client: TestClient, tiny_models: TinyModels) -> None:
    response = client.post("/v2/models/mlp/infer", json=infer_body(X, name="INPUT__0"))
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert response.json()["model_version"] == "2" and out["name"] == "OUTPUT__0"
    np.testing.assert_allclose(
        np.asarray(out["data"], np.float32).reshape(out["shape"]),
        tiny_models.reference(X),
        rtol=1e-5,
        atol=1e-6,
    )


def test_infer_binary_data_extension(client: TestClient, tiny_models: TinyModels) -> None:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, IN_FEATURES],
                    "parameters": {"binary_data_size": X.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = client.post(
        "/v2/models/mlp/versions/1/infer",
        content=head + X.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(head)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:length])["outputs"][0]
    assert meta["parameters"]["binary_data_size"] == 2 * OUT_FEATURES * 4
    got = np.frombuffer(response.content[length:], np.float32).reshape(meta["shape"])
    np.testing.assert_allclose(got, tiny_models.reference(X), rtol=1e-5, atol=1e-6)


def test_gzip_request_body_is_accepted(client: TestClient) -> None:
    raw = gzip.compress(json.dumps(infer_body(X)).encode())
    response = client.post("/v2/models/mlp/versions/1/infer", content=raw, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "body", "status", "match"),
    [
        ("/v2/models/nope/infer", infer_body(X), 404, "nope"),
        ("/v2/models/mlp/versions/9/infer", infer_body(X), 404, "version '9'"),
        ("/v2/models/mlp/versions/1/infer", infer_body(np.zeros((2, 5), np.float32)), 400, "shape"),
        (
            "/v2/models/mlp/versions/1/infer",
            infer_body(np.zeros((2, IN_FEATURES, 1), np.float32)),
            400,
            "shape",
        ),
        ("/v2/models/mlp/versions/1/infer", infer_body(X, name="z"), 400, "missing"),
        (
            "/v2/models/mlp/versions/1/infer",
            {"inputs": [{**infer_body(X)["inputs"][0], "datatype": "FP64"}]},
            400,
            "FP32",
        ),
        ("/v2/models/mlp/versions/1/infer", {"inputs": []}, 400, "schema"),
        ("/v2/models/mlp/versions/1/infer", infer_body(X, outputs=[{"name": "q"}]), 400, "unknown output"),
    ],
)
def test_errors_map_to_status_codes(
    client: TestClient, path: str, body: dict[str, Any], status: int, match: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status
    assert match in response.json()["error"]


def test_invalid_json_is_400(client: TestClient) -> None:
    response = client.post("/v2/models/mlp/versions/1/infer", content=b"{oops")
    assert response.status_code == 400 and "JSON" in response.json()["error"]


def test_unknown_model_metadata_is_404(client: TestClient) -> None:
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_load_and_unload_through_the_repository(client: TestClient) -> None:
    index = {(r["name"], r["version"]): r["state"] for r in client.post("/v2/repository/index").json()}
    assert index == {("mlp", "1"): "READY", ("mlp", "2"): "READY", ("lazy", "7"): "UNAVAILABLE"}
    assert client.post("/v2/models/lazy/infer", json=infer_body(X, name="INPUT__0")).status_code == 404

    loaded = client.post("/v2/repository/models/lazy/load")
    assert loaded.status_code == 200 and loaded.json()["version"] == "7"
    assert client.post("/v2/models/lazy/infer", json=infer_body(X, name="INPUT__0")).status_code == 200
    ready = client.post("/v2/repository/index", json={"ready": True}).json()
    assert {(r["name"], r["version"]) for r in ready} == {("mlp", "1"), ("mlp", "2"), ("lazy", "7")}

    unloaded = client.post("/v2/repository/models/mlp/unload", json={"parameters": {"version": "1"}})
    assert unloaded.json() == {"name": "mlp", "unloaded": ["1"]}
    assert client.post("/v2/models/mlp/versions/1/infer", json=infer_body(X)).status_code == 404
    assert client.get("/v2/models/mlp").json()["versions"] == ["2"]

    assert client.post("/v2/repository/models/ghost/load").status_code == 404
    assert client.post("/v2/repository/models/ghost/unload").status_code == 404
    bad = client.post("/v2/repository/models/lazy/load", json={"parameters": {"config": "{}"}})
    assert bad.status_code == 400


def test_metrics_count_requests_failures_and_batches(client: TestClient, registry: CollectorRegistry) -> None:
    assert client.post("/v2/models/mlp/versions/1/infer", json=infer_body(X)).status_code == 200
    assert client.post("/v2/models/mlp/versions/1/infer", json=infer_body(X, name="z")).status_code == 400
    labels = {"model": "mlp", "version": "1"}
    assert sample(registry, "edgefleet_serving_requests_total", **labels) == 2
    assert sample(registry, "edgefleet_serving_request_failures_total", **labels, reason="invalid_input") == 1
    assert sample(registry, "edgefleet_serving_batch_size_sum", **labels) == 2  # one batch of 2 rows
    text = client.get("/metrics").text
    for name in (
        "edgefleet_serving_requests_total",
        "edgefleet_serving_request_failures_total",
        "edgefleet_serving_queue_duration_seconds_bucket",
        "edgefleet_serving_compute_duration_seconds_bucket",
        "edgefleet_serving_batch_size_bucket",
        "edgefleet_serving_request_duration_seconds_bucket",
    ):
        assert name in text


def test_model_config_reflects_batching(client: TestClient) -> None:
    config = client.get("/v2/models/mlp/versions/1/config").json()
    assert config["max_batch_size"] == 32 and config["platform"] == "onnxruntime_onnx"
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [IN_FEATURES]}]
    assert "dynamic_batching" in config


def test_model_without_batch_dimension_is_served_unbatched(registry: CollectorRegistry) -> None:
    fixed = GatedBackend(inputs=(TensorSpec(name="x", shape=(1, 2)),), outputs=(TensorSpec(name="y", shape=(1, 2)),))
    app = create_app([fake_spec()], registry=registry, loader=lambda spec: fixed)
    with TestClient(app) as c:
        assert c.get("/v2/models/fake/config").json()["max_batch_size"] == 0
        ok = c.post("/v2/models/fake/infer", json=infer_body(np.ones((1, 2), np.float32)))
        assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [2.0, 2.0]


# --- over real HTTP, with concurrent clients ------------------------------------------------------


def _fake_app(backend: GatedBackend, registry: CollectorRegistry, **batching: Any) -> Any:
    def loader(spec: ModelSpec) -> Backend:
        return backend

    return create_app([fake_spec(**batching)], registry=registry, loader=loader)


def _post(base: str, body: dict[str, Any], path: str = "/v2/models/fake/infer") -> httpx.Response:
    return httpx.post(f"http://{base}{path}", json=body, timeout=30)


def test_concurrent_http_requests_form_one_batch(tiny_models: TinyModels, registry: CollectorRegistry) -> None:
    # the batch can only leave full (4 rows): the 30 s delay is far beyond the test
    spec = ModelSpec.model_validate(
        {
            "name": "mlp",
            "path": tiny_models.onnx,
            "batching": {"max_batch_size": 4, "max_queue_delay_ms": 30_000},
        }
    )
    xs = [np.full((1, IN_FEATURES), i, np.float32) for i in range(4)]
    with running_server(create_app([spec], registry=registry)) as base, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda x: _post(base, infer_body(x), "/v2/models/mlp/infer"), xs))
    assert [r.status_code for r in responses] == [200] * 4
    for x, r in zip(xs, responses, strict=True):
        out = r.json()["outputs"][0]
        np.testing.assert_allclose(
            np.asarray(out["data"], np.float32).reshape(1, -1), tiny_models.reference(x), atol=1e-5
        )
    labels = {"model": "mlp", "version": "1"}
    assert sample(registry, "edgefleet_serving_batch_size_count", **labels) == 1
    assert sample(registry, "edgefleet_serving_batch_size_sum", **labels) == 4


def test_full_queue_answers_503_with_retry_after(registry: CollectorRegistry) -> None:
    backend = GatedBackend(gated=True)
    body = infer_body(np.ones((1, 2), np.float32))
    app = _fake_app(backend, registry, max_batch_size=1, max_queue_size=1)
    with running_server(app) as base, ThreadPoolExecutor(3) as pool:
        try:
            first = pool.submit(_post, base, body)
            assert backend.entered.wait(10)  # the first request holds the model
            second, third = pool.submit(_post, base, body), pool.submit(_post, base, body)
            done, _ = wait([second, third], timeout=10, return_when=FIRST_COMPLETED)
            rejected = done.pop().result()  # one of the two is queued, the other is turned away at once
            assert rejected.status_code == 503
            assert int(rejected.headers["Retry-After"]) >= 1
            assert "queued" in rejected.json()["error"]
        finally:
            backend.release.set()
        statuses = sorted(f.result().status_code for f in (first, second, third))
    assert statuses == [200, 200, 503]
    assert (
        sample(
            registry,
            "edgefleet_serving_request_failures_total",
            model="fake",
            version="1",
            reason="overloaded",
        )
        == 1
    )


def test_request_past_its_timeout_answers_504(registry: CollectorRegistry) -> None:
    backend = GatedBackend()
    app = _fake_app(backend, registry, max_batch_size=4, max_queue_delay_ms=30_000)
    with running_server(app) as base:
        response = _post(base, infer_body(np.ones((1, 2), np.float32), parameters={"timeout": 50_000}))
    assert response.status_code == 504
    assert "50 ms" in response.json()["error"]
    assert backend.batches == []
    assert (
        sample(registry, "edgefleet_serving_request_failures_total", model="fake", version="1", reason="timeout") == 1
    )


def test_default_timeout_comes_from_the_model_config(registry: CollectorRegistry) -> None:
    backend = GatedBackend(gated=True)
    app = _fake_app(backend, registry, max_batch_size=4, max_queue_delay_ms=0, default_timeout_ms=50)
    with running_server(app) as base:
        try:
            response = _post(base, infer_body(np.ones((1, 2), np.float32)))
        finally:
            backend.release.set()
    assert response.status_code == 504


def test_unload_every_version_then_load_the_latest(tiny_models: TinyModels, registry: CollectorRegistry) -> None:
    spec = ModelSpec(name="mlp", path=tiny_models.onnx)
    other = spec.model_copy(update={"version": "2"})
    with running_server(create_app([spec, other], registry=registry)) as base:
        assert _post(base, {}, "/v2/repository/models/mlp/unload").json()["unloaded"] == ["1", "2"]
        assert _post(base, infer_body(X), "/v2/models/mlp/infer").status_code == 404
        assert _post(base, {}, "/v2/repository/models/mlp/load").json()["version"] == "2"
        assert _post(base, infer_body(X), "/v2/models/mlp/infer").status_code == 200


def test_router_mounts_in_another_app_with_its_lifecycle(tiny_models: TinyModels) -> None:
    from fastapi import FastAPI

    from hub.errors import HubError
    from hub.serving import ModelManager, ServingMetrics, build_router

    host = FastAPI()  # stands in for the hub's app, with its own error handler and routes

    @host.exception_handler(HubError)
    async def _hub_error(_: Any, exc: HubError) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)

    @host.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    spec = ModelSpec(name="mlp", path=tiny_models.onnx)
    manager = ModelManager(StaticRepository([spec]), ServingMetrics(CollectorRegistry()))
    host.include_router(build_router(manager, startup=[spec]))
    with TestClient(host) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/v2/health/ready").status_code == 200
        assert c.post("/v2/models/mlp/infer", json=infer_body(X)).status_code == 200
        assert c.post("/v2/models/nope/infer", json=infer_body(X)).json() == {"error": "model 'nope' is not loaded"}
    assert not manager.ready and manager.loaded() == []  # unloaded at shutdown
