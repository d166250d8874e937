"""A stock V2 client (tritonclient's HTTP client) against the server over real HTTP.

tritonclient is a dev-only dependency: the module is skipped when it is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from hub.serving import ModelSpec, StaticRepository, create_app
from tests.http_server import running_server
from tests.hub.serving.conftest import IN_FEATURES, TinyModels

httpclient: Any = pytest.importorskip("tritonclient.http")
utils: Any = pytest.importorskip("tritonclient.utils")

X = np.random.default_rng(2).standard_normal((3, IN_FEATURES)).astype(np.float32)


@pytest.fixture(scope="module")
def server(tiny_models: TinyModels) -> Iterator[str]:
    spec = ModelSpec(name="mlp", path=tiny_models.onnx)
    lazy = ModelSpec(name="lazy", version="3", path=tiny_models.onnx)
    app = create_app([spec], registry=CollectorRegistry(), repository=StaticRepository([spec, lazy]))
    with running_server(app) as base:
        yield base


@pytest.fixture
def client(server: str) -> Iterator[Any]:
    c = httpclient.InferenceServerClient(url=server)
    try:
        yield c
    finally:
        c.close()


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("nope")
    assert client.get_server_metadata()["name"] == "edgefleet"
    meta = client.get_model_metadata("mlp")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, IN_FEATURES]}]
    assert client.get_model_config("mlp")["max_batch_size"] == 32


@pytest.mark.parametrize("binary", [True, False])
def test_infer_binary_and_json(client: Any, tiny_models: TinyModels, binary: bool) -> None:
    inp = httpclient.InferInput("x", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=binary)
    out = httpclient.InferRequestedOutput("y", binary_data=binary)
    result = client.infer("mlp", [inp], outputs=[out], request_id="req-1", model_version="1")
    np.testing.assert_allclose(result.as_numpy("y"), tiny_models.reference(X), rtol=1e-5, atol=1e-6)
    assert result.get_response()["id"] == "req-1"


def test_infer_without_named_outputs(client: Any, tiny_models: TinyModels) -> None:
    inp = httpclient.InferInput("x", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    result = client.infer("mlp", [inp])
    np.testing.assert_allclose(result.as_numpy("y"), tiny_models.reference(X), rtol=1e-5, atol=1e-6)


def test_errors_reach_the_client(client: Any) -> None:
    inp = httpclient.InferInput("x", [1, IN_FEATURES + 1], "FP32")
    inp.set_data_from_numpy(np.zeros((1, IN_FEATURES + 1), np.float32))
    with pytest.raises(utils.InferenceServerException, match="shape") as bad:
        client.infer("mlp", [inp])
    assert bad.value.status() == "400"
    with pytest.raises(utils.InferenceServerException) as missing:
        client.infer("nope", [inp])
    assert missing.value.status() == "404"


def test_repository_load_and_unload(client: Any) -> None:
    index = {(m["name"], m["version"]): m["state"] for m in client.get_model_repository_index()}
    assert index[("lazy", "3")] == "UNAVAILABLE"
    client.load_model("lazy")
    assert client.is_model_ready("lazy", "3")
    client.unload_model("lazy")
    assert not client.is_model_ready("lazy")
