"""``edgefleet serve`` and ``edgefleet serve export-triton`` through Typer's runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from hub.cli.serve import register
from tests.hub.serving.conftest import IN_FEATURES, TinyModels


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command, so "serve" stays a named subcommand as in edgefleet
        pass

    return app


def test_serve_builds_an_app_with_the_given_models(
    cli: typer.Typer, tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.setenv("EDGEFLEET_SERVING_TOKEN", "ef_test")
    result = CliRunner().invoke(
        cli,
        [
            "serve",
            "--model",
            f"mlp={tiny_models.onnx}",
            "--model",
            f"mlp:2={tiny_models.onnx}",
            "--port",
            "9100",
            "--max-batch-size",
            "8",
            "--preferred-batch-size",
            "4",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen["port"] == 9100 and seen["host"] == "127.0.0.1"
    with TestClient(seen["app"], headers={"Authorization": "Bearer ef_test"}) as client:
        assert client.get("/v2/models/mlp").json()["versions"] == ["1", "2"]
        config = client.get("/v2/models/mlp/versions/2/config").json()
        assert config["max_batch_size"] == 8
        assert config["dynamic_batching"]["preferred_batch_size"] == [4]
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, IN_FEATURES], "data": [0.0] * IN_FEATURES}]}
        assert client.post("/v2/models/mlp/infer", json=body).status_code == 200


def test_serve_reads_a_config_file(
    cli: typer.Typer, tiny_models: TinyModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app))
    config = tmp_path / "serving.json"
    config.write_text(
        json.dumps(
            {
                "models": [
                    {"name": "a", "path": str(tiny_models.onnx), "batching": {"max_batch_size": 0}},
                ]
            }
        )
    )
    token_file = tmp_path / "token"
    token_file.write_text("ef_from_file\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config), "--token-file", str(token_file)])
    assert result.exit_code == 0, result.output
    with TestClient(seen["app"], headers={"Authorization": "Bearer ef_from_file"}) as client:
        assert client.get("/v2/models/a/config").json()["max_batch_size"] == 0


def test_serving_needs_a_token_by_default_except_for_health_probes(
    cli: typer.Typer, tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app))
    monkeypatch.delenv("EDGEFLEET_SERVING_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["serve", "--model", f"mlp={tiny_models.onnx}"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().rsplit(" ", 1)[-1]  # printed once
    assert token.startswith("ef_")
    with TestClient(seen["app"]) as client:
        assert client.get("/v2/health/ready").status_code == 200
        for path in ("/v2/models/mlp", "/metrics", "/v2/repository/index"):
            assert client.get(path).status_code == 401, path
        assert client.get("/v2/models/mlp", headers={"Authorization": "Bearer ef_wrong"}).status_code == 401
        assert client.get("/v2/models/mlp", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    open_result = CliRunner().invoke(cli, ["serve", "--model", f"mlp={tiny_models.onnx}", "--no-auth"])
    assert open_result.exit_code == 0 and "token" not in open_result.output
    with TestClient(seen["app"]) as client:
        assert client.get("/v2/models/mlp").status_code == 200


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],  # nothing to serve
        ["serve", "--model", "no-equals-sign"],
        ["serve", "--model", "m=model.unknown"],
        ["serve", "--model", "m=a.onnx", "--max-batch-size", "2", "--preferred-batch-size", "4"],
        ["serve", "--model", "m=a.onnx", "--device", "tpu"],
    ],
)
def test_serve_rejects_bad_arguments(cli: typer.Typer, args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_export_triton(cli: typer.Typer, tiny_models: TinyModels, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "serve",
            "export-triton",
            f"mlp:4={tiny_models.onnx}",
            "--out",
            str(tmp_path),
            "--max-batch-size",
            "8",
            "--max-queue-delay-ms",
            "1",
            "--instance-kind",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "mlp")
    assert (tmp_path / "mlp" / "4" / "model.onnx").is_file()
    pbtxt = (tmp_path / "mlp" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in pbtxt and "max_queue_delay_microseconds: 1000" in pbtxt
    assert "kind: KIND_CPU" in pbtxt


def test_export_triton_reports_unexportable_models(cli: typer.Typer, tiny_models: TinyModels, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "export-triton", f"ep={tiny_models.exported}", "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert "ONNX or TorchScript" in result.output
