"""The offload client sends the serving tier's API token and reads an Open Inference Protocol answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agent.config import AgentConfig
from agent.errors import AgentConfigError
from agent.offload import OffloadClient, OffloadError
from tests.http_server import running_server


def _tier(token: str) -> FastAPI:
    app = FastAPI()

    @app.post("/v2/models/{model}/versions/{version}/infer")
    async def infer(model: str, version: str, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {token}":
            return JSONResponse({"error": "missing or bad token"}, status_code=401)
        data = (await request.json())["inputs"][0]
        return JSONResponse({"outputs": [{"name": "y", "datatype": "FP32", "shape": data["shape"],
                                          "data": [2 * x for x in data["data"]]}]})  # fmt: skip

    return app


def test_the_token_is_sent_and_a_missing_one_is_refused() -> None:
    with running_server(_tier("ef_secret")) as address:
        batch = np.array([[1.0, 2.0]], dtype=np.float32)
        answer = OffloadClient(f"http://{address}", token="ef_secret").infer("m", "1", "x", batch)
        assert answer.tolist() == [[2.0, 4.0]]
        with pytest.raises(OffloadError, match="answered 401"):
            OffloadClient(f"http://{address}").infer("m", "1", "x", batch)


def test_the_token_comes_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "serving.token").write_text("ef_abc\n")
    (tmp_path / "root.json").write_text("{}")
    (tmp_path / "agent.toml").write_text(
        'device_id = "cam-1"\ntarget = "rpi4-arm64"\ntrust_root = "root.json"\n'
        'offload_url = "http://hub:8600"\noffload_token_file = "serving.token"\n'
    )
    assert AgentConfig.load(tmp_path / "agent.toml").offload_token() == "ef_abc"
    (tmp_path / "serving.token").unlink()
    with pytest.raises(AgentConfigError, match="cannot read offload_token_file"):
        AgentConfig.load(tmp_path / "agent.toml").offload_token()
