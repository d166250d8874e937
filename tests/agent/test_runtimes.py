"""Runtimes chosen by the bundle: ONNX Runtime and OpenVINO run the same model alike (OpenVINO in the
variant's own precision, never a silent bf16); TorchScript runs through the agent-torch extra; Core ML
runs on macOS and is refused elsewhere with a clear error."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

from agent.bundle import LoadedBundle
from agent.errors import InferenceError, RuntimeUnavailableError
from agent.model import ServableModel
from agent.runtimes import load_runtime
from fleet.wire.bundle import BundleManifest, TensorSpec


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import torch

    from converters import export_onnx

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    path = export_onnx(module, (torch.zeros(1, 8),), tmp_path_factory.mktemp("m") / "m.onnx")
    return Path(path).read_bytes()


def _manifest(runtime: str, target: str) -> BundleManifest:
    return BundleManifest(
        model="m",
        version="1.0.0",
        target=target,
        runtime=runtime,  # type: ignore[arg-type]
        model_file="model.onnx",
        input=TensorSpec(name="input", shape=[-1, 8]),
    )


def test_openvino_and_onnxruntime_agree(onnx_model: bytes) -> None:
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    ort_out = load_runtime(_manifest("onnxruntime", "x86-onnx-cpu"), onnx_model).run(x)
    openvino = load_runtime(_manifest("openvino", "intel-openvino"), onnx_model)
    assert openvino.inference_precision == "f32"  # type: ignore[attr-defined]
    np.testing.assert_allclose(openvino.run(x), ort_out, atol=1e-4)


@pytest.mark.parametrize(("runtime", "target"), [("onnxruntime", "x86-onnx-cpu"), ("openvino", "intel-openvino")])
def test_a_wrong_input_shape_is_one_line_inference_error(onnx_model: bytes, runtime: str, target: str) -> None:
    loaded = load_runtime(_manifest(runtime, target), onnx_model)
    with pytest.raises(InferenceError, match=r"rejected input of shape \(2, 5\)") as raised:
        loaded.run(np.zeros((2, 5), dtype=np.float32))  # 5 features where the model takes 8
    assert "\n" not in str(raised.value)


def test_openvino_runs_bf16_only_for_a_bf16_variant(onnx_model: bytes) -> None:
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16 support")
    manifest = _manifest("openvino", "intel-openvino").model_copy(update={"precision": "bf16"})
    assert load_runtime(manifest, onnx_model).inference_precision == "bf16"  # type: ignore[attr-defined]


def _traced(batch: int) -> tuple[object, bytes]:
    import io

    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    traced = torch.jit.trace(module, torch.zeros(batch, 8))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return module, buffer.getvalue()


def test_torchscript_runs_a_traced_model() -> None:
    import torch

    module, model_bytes = _traced(2)
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    runtime = load_runtime(_manifest("torchscript", "torchscript-cpu"), model_bytes)
    np.testing.assert_allclose(runtime.run(x), module(torch.from_numpy(x)).detach().numpy(), atol=1e-6)
    with pytest.raises(RuntimeUnavailableError, match="TorchScript cannot load the model"):
        load_runtime(_manifest("torchscript", "torchscript-cpu"), b"not a zip archive")


def test_torchscript_with_a_fixed_batch_of_one_runs_row_by_row() -> None:
    import torch

    module, model_bytes = _traced(1)
    manifest = _manifest("torchscript", "torchscript-cpu").model_copy(
        update={"input": TensorSpec(name="input", shape=[1, 8])}
    )
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    got = load_runtime(manifest, model_bytes).run(x)
    np.testing.assert_allclose(got, module(torch.from_numpy(x)).detach().numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def fixed_batch_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, bytes]:
    """A module exported to ONNX with a batch of exactly 1 (as ``torch.export`` without dynamic shapes gives)."""
    import torch

    from converters import export_onnx

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    path = export_onnx(module, (torch.zeros(1, 8),), tmp_path_factory.mktemp("m") / "m.onnx", dynamic_batch=False)
    return module, Path(path).read_bytes()


@pytest.mark.parametrize(("runtime", "target"), [("onnxruntime", "x86-onnx-cpu"), ("openvino", "intel-openvino")])
def test_a_model_with_a_fixed_batch_of_one_runs_a_batch_row_by_row(
    runtime: str, target: str, fixed_batch_model: tuple[object, bytes]
) -> None:
    import torch

    module, model_bytes = fixed_batch_model
    manifest = _manifest(runtime, target).model_copy(update={"input": TensorSpec(name="input", shape=[1, 8])})
    x = np.random.default_rng(2).normal(size=(3, 8)).astype(np.float32)
    got = load_runtime(manifest, model_bytes).run(x)
    np.testing.assert_allclose(got, module(torch.from_numpy(x)).detach().numpy(), atol=1e-4)  # type: ignore[operator]


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predictions run only on macOS")
def test_core_ml_runs_on_macos(tmp_path: Path) -> None:  # pragma: no cover - macOS only
    import io
    import zipfile

    import coremltools as ct
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 3)).eval()
    traced = torch.jit.trace(module, torch.zeros(1, 8))
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name="input", shape=(1, 8))],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32,
    )
    mlmodel.save(str(tmp_path / "m.mlpackage"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in (tmp_path / "m.mlpackage").rglob("*"):
            archive.write(path, path.relative_to(tmp_path / "m.mlpackage"))
    x = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    got = load_runtime(_manifest("coreml", "apple-coreml"), buffer.getvalue()).run(x)
    np.testing.assert_allclose(got, module(torch.from_numpy(x)).detach().numpy(), atol=1e-4)


def test_litert_runs_a_converted_model_row_by_row(tmp_path: Path) -> None:
    import litert_torch
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    litert_torch.convert(module, (torch.zeros(1, 8),)).export(str(tmp_path / "m.tflite"))
    runtime = load_runtime(_manifest("litert", "rpi4-arm64"), (tmp_path / "m.tflite").read_bytes())
    x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    np.testing.assert_allclose(runtime.run(x), module(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_litert_refuses_a_corrupt_model() -> None:
    with pytest.raises(RuntimeUnavailableError, match="LiteRT cannot load the model"):
        load_runtime(_manifest("litert", "rpi4-arm64"), b"TFL3 not really a flatbuffer")


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML can run on macOS")
def test_core_ml_is_refused_off_apple_platforms(onnx_model: bytes) -> None:
    with pytest.raises(RuntimeUnavailableError, match="Core ML models run only on macOS/iOS"):
        load_runtime(_manifest("coreml", "apple-coreml"), onnx_model)


def test_prepare_checks_shape_and_applies_affine_preprocessing(onnx_model: bytes) -> None:
    manifest = _manifest("onnxruntime", "x86-onnx-cpu").model_copy(
        update={"preprocess": {"kind": "affine", "scale": 2.0, "mean": [1.0], "std": [4.0]}}
    )
    manifest = BundleManifest.model_validate(manifest.model_dump())
    bundle = LoadedBundle(manifest, onnx_model, np.zeros((1, 8), np.float32), np.zeros((1, 3), np.float32), None)
    model = ServableModel(bundle, "0" * 64)
    np.testing.assert_allclose(model.prepare([[3.0] * 8]), [[1.25] * 8])
    assert model.prepare([1.0] * 8).shape == (1, 8)  # a single input becomes a batch of one
    with pytest.raises(ValueError, match=r"input shape \[1, 7\] does not match model input \[-1, 8\]"):
        model.prepare([[1.0] * 7])
    answers = model.predict(np.ones((2, 8)))
    assert len(answers) == 2 and abs(sum(answers[0].scores) - 1.0) < 1e-6
