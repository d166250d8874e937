"""Registry models served from the hub over the Open Inference Protocol (what devices offload to)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hub.app import Hub
from hub.config import HubSettings
from hub.demo.model import digits_manifest, train_digits
from tests.hub.auth.clients import api_client


def test_heavy_variant_is_served_from_the_registry(tmp_path: Path) -> None:
    trained = train_digits(tmp_path / "model", epochs=5)
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))
    hub.start()
    try:
        hub.publish(
            digits_manifest(trained, "2.0.0", target="cloud-gpu"),
            trained.onnx_path,
            trained.golden_x,
            trained.golden_logits,
        )
        hub.publish(
            digits_manifest(trained, "2.0.0", target="x86-onnx-cpu"),
            trained.onnx_path,
            trained.golden_x,
            trained.golden_logits,
        )
        with api_client(hub) as client:
            index = client.post("/v2/repository/index").json()
            assert [(row["name"], row["version"]) for row in index] == [("digits", "2.0.0")]
            assert client.post("/v2/repository/models/digits/load").status_code == 200
            x = ((trained.golden_x[:2] - trained.mean) / trained.std).astype(np.float32)
            answer = client.post(
                "/v2/models/digits/versions/2.0.0/infer",
                json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": x.ravel().tolist()}]},
            )
            assert answer.status_code == 200, answer.text
            output = answer.json()["outputs"][0]
            np.testing.assert_allclose(
                np.asarray(output["data"]).reshape(output["shape"]), trained.golden_logits[:2], atol=1e-4
            )
            assert client.post("/v2/repository/models/nothing/load").status_code == 404
    finally:
        hub.stop()
