"""Every runtime end to end (slow: LiteRT, OpenVINO/NNCF, Core ML), transformer encoders included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters import UnsupportedOperatorError
from converters.convert import convert
from tests.converters.conftest import Trained
from tests.converters.converter_models import mystery_model

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def test_cnn_on_litert_openvino_and_mcu_int8(cnn: Trained, tmp_path: Path, shared_cache: Path) -> None:
    report = convert(
        cnn.model,
        ["mcu-int8", "intel-openvino"],
        tmp_path / "out",
        example_inputs=cnn.example,
        calib=cnn.calib,
        eval=cnn.eval,
        cache_dir=shared_cache,
        precisions=["int8"],
    )
    for variant in report.variants:
        assert variant.executed and variant.status == "ok", variant
        assert report.source_accuracy - variant.accuracy <= 0.01 + 1e-9
    mcu = report.variant("mcu-int8", "int8")
    assert mcu.meta["int8_io"] is True
    assert mcu.meta["tflite_inputs"][0]["dtype"] == "int8" and mcu.meta["tflite_inputs"][0]["scale"] > 0
    fp32_bytes = sum(p.numel() * 4 for p in cnn.model.parameters())
    assert mcu.size_bytes < 0.5 * fp32_bytes
    openvino = report.variant("intel-openvino", "int8")
    assert openvino.meta["quantization"] == "nncf_ptq" and openvino.meta["weights"] == "int8"
    assert (tmp_path / "out" / "intel-openvino-int8" / "model.bin").stat().st_size < 0.5 * fp32_bytes


def test_transformer_encoder_on_every_runtime_that_runs_here(
    encoder: Trained, tmp_path: Path, shared_cache: Path
) -> None:
    out = tmp_path / "out"
    report = convert(
        encoder.model,
        ["x86-onnx-cpu", "rpi4-arm64", "intel-openvino"],
        out,
        example_inputs=encoder.example,
        input_names=("input_ids",),
        dynamic_axes={"input_ids": {1: "seq"}},
        calib=encoder.calib,
        eval=encoder.eval,
        cache_dir=shared_cache,
        precisions=["int8"],
        max_accuracy_drop=0.03,
        max_trials=3,
    )
    assert report.source_accuracy is not None and report.source_accuracy > 0.6
    for variant in report.variants:
        assert variant.executed, variant.name
        assert variant.within_budget and variant.accuracy_drop <= 0.03, variant.name
        assert variant.top1_agreement is not None and variant.top1_agreement >= 0.9, variant.name
    import onnxruntime as ort

    onnx_int8 = report.variant("x86-onnx-cpu", "int8")
    session = ort.InferenceSession(str(report.artifact_path(onnx_int8)), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(int64)"
    longer = np.tile(encoder.eval.inputs["input_ids"][:16], (1, 2))  # other batch size and sequence length
    got = session.run(None, {"input_ids": longer})[0]
    assert got.shape == (16, 4)
    want = encoder.model(torch.from_numpy(longer)).detach().numpy()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.8


def test_coreml_and_gpu_targets_are_converted_but_never_passing_here(
    mlp: Trained, tmp_path: Path, shared_cache: Path
) -> None:
    out = tmp_path / "out"
    report = convert(
        mlp.model,
        ["apple-coreml", "jetson-orin"],
        out,
        example_inputs=mlp.example,
        calib=mlp.calib,
        eval=mlp.eval,
        cache_dir=shared_cache,
    )
    assert {v.name for v in report.variants} == {
        "apple-coreml/fp16",
        "apple-coreml/int8",
        "apple-coreml/palettized",
        "jetson-orin/fp16",
        "jetson-orin/fp32",
    }
    for variant in report.variants:
        assert variant.executed is False and variant.within_budget is None and variant.status == "not_executed"
        assert variant.latency_ms_p50 is None and variant.top1_agreement is None
        assert (out / variant.path).exists() and variant.size_bytes > 0
    assert "macOS" in (report.variant("apple-coreml", "fp16").reason or "")
    sizes = {v.precision: v.size_bytes for v in report.variants if v.target == "apple-coreml"}
    assert sizes["int8"] < sizes["fp16"] and sizes["palettized"] < sizes["fp16"]


@pytest.mark.parametrize(
    ("target", "precision", "stage"),
    [
        ("rpi4-arm64", "fp32", "export"),
        ("mcu-int8", "int8", "litert_int8"),
        ("intel-openvino", "fp32", "export"),
        ("apple-coreml", "fp16", "export"),
    ],
)
def test_unsupported_operator_on_other_exporters(target: str, precision: str, stage: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UnsupportedOperatorError) as info:
        convert(mystery_model(), [target], out, example_inputs=(torch.randn(1, 4),), precisions=[precision])
    assert "mystery" in info.value.operator
    assert (info.value.target, info.value.stage) == (target, stage)
    assert list(tmp_path.iterdir()) == []
