"""Source formats (ONNX, TorchScript, .pt2 with a dynamic batch) and the remaining ONNX passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters import InvalidDataError, InvalidSourceError, export_onnx
from converters.convert import convert
from converters.data import load_npz
from converters.registry import module_available
from converters.source import load_source
from tests.converters.conftest import Trained

torch = pytest.importorskip("torch")


def test_onnx_source_converts_for_onnxruntime(mlp: Trained, tmp_path: Path) -> None:
    path = export_onnx(mlp.model, mlp.example, tmp_path / "mlp.onnx")
    np.savez(tmp_path / "eval.npz", mlp.eval.inputs["input"], labels=mlp.eval.labels)  # unnamed array
    report = convert(path, ["x86-onnx-cpu"], tmp_path / "out", eval=tmp_path / "eval.npz")
    assert report.source["kind"] == "onnx"
    assert report.calibration.origin.endswith("eval.npz")  # calibration fell back to the evaluation data
    assert all(variant.executed for variant in report.variants)
    assert report.variant("x86-onnx-cpu", "fp32").max_abs_error < 1e-4
    assert report.variant("x86-onnx-cpu", "fp32").status == "ok"
    assert report.variant("x86-onnx-cpu", "int8").top1_agreement >= 0.95


def test_onnx_source_reaches_every_target(cnn: Trained, tmp_path: Path) -> None:
    if not module_available("onnx2torch"):
        pytest.skip("onnx2torch is not installed (pip install edgefleet[convert-onnx])")
    path = export_onnx(cnn.model, cnn.example, tmp_path / "cnn.onnx")
    targets = ["x86-onnx-cpu", "intel-openvino", "rpi4-arm64", "torchscript-cpu", "apple-coreml"]
    report = convert(path, targets, tmp_path / "out", eval=cnn.eval, precisions=["fp32", "fp16"])
    assert {v.target for v in report.variants} == set(targets)
    for variant in report.variants:
        expected = "not_executed" if variant.target == "apple-coreml" else "ok"
        assert variant.status == expected, (variant.name, variant.error)
    litert = report.variant("rpi4-arm64", "fp32")
    assert litert.max_rel_error < 1e-4 and litert.accuracy == report.source_accuracy


def test_torchscript_source(mlp: Trained, tmp_path: Path) -> None:
    scripted = torch.jit.trace(mlp.model, mlp.example)
    path = tmp_path / "mlp.pt"
    torch.jit.save(scripted, str(path))
    report = convert(path, ["torchscript-cpu", "x86-onnx-cpu"], tmp_path / "out", precisions=["fp32"], eval=mlp.eval)
    assert report.source["kind"] == "torchscript"
    assert all(v.executed and v.max_abs_error < 1e-4 for v in report.variants)


def test_pt2_with_dynamic_batch_keeps_it(mlp: Trained, tmp_path: Path) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(mlp.model, (mlp.example[0].repeat(2, 1),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    source = load_source(tmp_path / "m.pt2")
    assert source.batch_dynamic and source.input_names == ("x",)
    out = source.run({"x": mlp.eval.inputs["input"][:5]})
    assert out.shape == (5, 10)


def test_fp16_and_dynamic_int8_passes_run_on_cpu(mlp: Trained, tmp_path: Path, shared_cache: Path) -> None:
    common = {"example_inputs": mlp.example, "calib": mlp.calib, "eval": mlp.eval, "cache_dir": shared_cache}
    fp16_report = convert(
        mlp.model,
        ["x86-onnx-cpu"],
        tmp_path / "a",
        **common,
        pipelines={"x86-onnx-cpu": [{"type": "onnx_export"}, {"type": "fp16"}]},
    )
    (fp16,) = fp16_report.variants
    assert fp16.precision == "fp16" and fp16.executed
    assert fp16.max_rel_error < 1e-2 and fp16.top1_agreement >= 0.99
    int8_report = convert(
        mlp.model,
        ["x86-onnx-cpu"],
        tmp_path / "b",
        **common,
        precisions=["int8"],
        pipelines={"x86-onnx-cpu/int8": [{"type": "onnx_export"}, {"type": "int8_dynamic", "per_channel": True}]},
    )
    (int8,) = int8_report.variants
    assert int8.executed and int8.meta["quantization"] == "dynamic" and int8.top1_agreement >= 0.95


def test_pipeline_keys_must_match_targets_and_precisions(mlp: Trained, tmp_path: Path) -> None:
    from converters import PipelineConfigError

    with pytest.raises(PipelineConfigError, match="not among the targets"):
        convert(
            mlp.model,
            ["x86-onnx-cpu"],
            tmp_path / "out",
            example_inputs=mlp.example,
            pipelines={"rpi4-arm64": [{"type": "litert_export"}]},
        )
    with pytest.raises(PipelineConfigError, match="produces a fp16 variant"):
        convert(
            mlp.model,
            ["x86-onnx-cpu"],
            tmp_path / "out",
            example_inputs=mlp.example,
            pipelines={"x86-onnx-cpu/fp32": [{"type": "onnx_export"}, {"type": "fp16"}]},
        )
    assert not (tmp_path / "out").exists()


def test_bad_sources_and_data(tmp_path: Path) -> None:
    with pytest.raises(InvalidSourceError, match="does not exist"):
        load_source(tmp_path / "nope.onnx")
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(InvalidSourceError, match="unknown model format"):
        load_source(tmp_path / "model.h5")
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    with pytest.raises(InvalidDataError, match="name the arrays after the inputs"):
        load_npz(tmp_path / "two.npz", ["input"])
    np.savez(tmp_path / "ragged.npz", input=np.zeros((3, 2)), labels=np.zeros(4))
    with pytest.raises(InvalidDataError, match="4 labels for 3 samples"):
        load_npz(tmp_path / "ragged.npz", ["input"])
