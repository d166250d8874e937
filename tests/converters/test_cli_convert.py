"""`edgefleet convert` and `edgefleet targets list` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from converters import registry
from tests.converters.conftest import Trained

torch = pytest.importorskip("torch")


@pytest.fixture
def app():  # type: ignore[no-untyped-def]
    from hub.cli import app

    return app


def test_targets_list_json_lists_every_profile(app) -> None:  # type: ignore[no-untyped-def]
    from targets import TARGETS

    result = CliRunner().invoke(app, ["targets", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [t["name"] for t in listed] == list(TARGETS)
    assert all({"runtime", "precisions", "memory_mb", "accelerator", "latency_budget_ms"} <= set(t) for t in listed)


def test_convert_pt2_with_npz_data_writes_report(
    app,
    mlp: Trained,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    shared_cache: Path,
) -> None:
    program = torch.export.export(mlp.model, mlp.example)
    model_path = tmp_path / "mlp.pt2"
    torch.export.save(program, str(model_path))
    np.savez(tmp_path / "calib.npz", input=mlp.calib.inputs["input"])
    np.savez(tmp_path / "eval.npz", input=mlp.eval.inputs["input"], labels=mlp.eval.labels)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "convert",
            str(model_path),
            "--targets",
            "x86-onnx-cpu",
            "--calib",
            str(tmp_path / "calib.npz"),
            "--eval",
            str(tmp_path / "eval.npz"),
            "--out",
            str(out),
            "--cache-dir",
            str(shared_cache),
            "--max-accuracy-drop",
            "0.02",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report == json.loads((out / "report.json").read_text())
    assert {(v["target"], v["precision"]) for v in report["variants"]} == {
        ("x86-onnx-cpu", "int8"),
        ("x86-onnx-cpu", "fp32"),
    }
    assert all(v["executed"] and v["within_budget"] for v in report["variants"])
    assert report["max_accuracy_drop"] == 0.02
    int8 = next(v for v in report["variants"] if v["precision"] == "int8")
    assert int8["search"]["chosen"] is not None and int8["accuracy_drop"] <= 0.02
    assert report["source"]["kind"] == "exported"


def test_convert_refuses_a_missing_extra_before_importing(
    app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "module_available", lambda name: name != "nncf")
    result = CliRunner().invoke(
        app, ["convert", str(tmp_path / "missing.onnx"), "--targets", "intel-openvino", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    assert "nncf" in result.output and "pip install edgefleet[convert]" in result.output
    assert not (tmp_path / "out").exists()


def test_convert_unknown_target_is_an_error(app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(
        app, ["convert", str(tmp_path / "m.onnx"), "--targets", "toaster", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2 and "unknown target 'toaster'" in result.output


def test_convert_prints_a_table_and_fails_on_unsupported_operator(
    app,
    mlp: Trained,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    shared_cache: Path,
) -> None:
    from converters import export_onnx
    from tests.converters.converter_models import mystery_model

    source = export_onnx(mlp.model, mlp.example, tmp_path / "mlp.onnx")
    np.savez(tmp_path / "eval.npz", input=mlp.eval.inputs["input"], labels=mlp.eval.labels)
    pipeline = tmp_path / "pipeline.json"
    pipeline.write_text(
        json.dumps({"x86-onnx-cpu/int8": [{"type": "onnx_export"}, {"type": "int8_static", "calibration": "entropy"}]})
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "convert",
            str(source),
            "--targets",
            "x86-onnx-cpu",
            "--eval",
            str(tmp_path / "eval.npz"),
            "--pipeline",
            str(pipeline),
            "--out",
            str(out),
            "--cache-dir",
            str(shared_cache),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "x86-onnx-cpu/int8" in result.output and "x86-onnx-cpu/fp32" in result.output
    assert "report:" in result.output
    int8 = next(v for v in json.loads((out / "report.json").read_text())["variants"] if v["precision"] == "int8")
    assert int8["pipeline"][1]["calibration"] == "entropy"

    program = torch.export.export(mystery_model(), (torch.randn(1, 4),))
    torch.export.save(program, str(tmp_path / "mystery.pt2"))
    failed = CliRunner().invoke(
        app,
        [
            "convert",
            str(tmp_path / "mystery.pt2"),
            "--targets",
            "x86-onnx-cpu",
            "--out",
            str(tmp_path / "bad"),
            "--no-cache",
        ],
    )
    assert failed.exit_code == 2
    assert "mystery" in failed.output and "x86-onnx-cpu" in failed.output and "export" in failed.output
    assert not (tmp_path / "bad").exists()


def test_convert_exits_zero_when_some_target_was_built_and_non_zero_with_strict(  # type: ignore[no-untyped-def]
    app, tmp_path: Path
) -> None:
    from tests.converters.converter_models import mystery_model

    program = torch.export.export(mystery_model(), (torch.randn(1, 4),))
    torch.export.save(program, str(tmp_path / "mystery.pt2"))
    args = ["convert", str(tmp_path / "mystery.pt2"), "--targets", "x86-onnx-cpu,torchscript-cpu"]
    args += ["--precisions", "fp32", "--no-cache"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "x86-onnx-cpu/fp32" in result.output and "mystery" in result.output  # the reason is in the table
    strict = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "strict"), "--strict"])
    assert strict.exit_code == 2 and "mystery" in strict.output
    assert not (tmp_path / "strict").exists()
