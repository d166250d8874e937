"""Backends on CPU: ONNX Runtime, TorchScript, ExportedProgram; provider choice; load failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from hub.serving import BackendError, ModelSpec, TensorSpec, load_backend
from hub.serving.backends.ort import CPU, CUDA, choose_providers
from tests.hub.serving.conftest import IN_FEATURES, OUT_FEATURES, TinyModels

X = np.random.default_rng(0).standard_normal((3, IN_FEATURES)).astype(np.float32)


def test_onnx_backend_reports_specs_and_matches_torch(tiny_models: TinyModels) -> None:
    backend = load_backend(ModelSpec(name="m", path=tiny_models.onnx, device="cpu"))
    assert backend.platform == "onnxruntime_onnx" and backend.device == "cpu"
    assert backend.inputs == (TensorSpec(name="x", datatype="FP32", shape=(-1, IN_FEATURES)),)
    assert backend.outputs == (TensorSpec(name="y", datatype="FP32", shape=(-1, OUT_FEATURES)),)
    np.testing.assert_allclose(backend.infer({"x": X})["y"], tiny_models.reference(X), rtol=1e-5, atol=1e-6)


def test_torchscript_backend_uses_triton_names(tiny_models: TinyModels) -> None:
    backend = load_backend(ModelSpec(name="m", path=tiny_models.torchscript))
    assert backend.platform == "pytorch_libtorch" and backend.device == "cpu"
    assert [s.name for s in backend.inputs] == ["INPUT__0"]
    assert backend.inputs[0].shape is None  # TorchScript does not tell
    out = backend.infer({"INPUT__0": X})
    np.testing.assert_allclose(out["OUTPUT__0"], tiny_models.reference(X), rtol=1e-5, atol=1e-6)


def test_torchscript_declared_specs_win(tiny_models: TinyModels) -> None:
    declared = (TensorSpec(name="INPUT__0", shape=(-1, IN_FEATURES)),)
    backend = load_backend(ModelSpec(name="m", path=tiny_models.torchscript, inputs=declared))
    assert backend.inputs == declared


def test_exported_program_specs_come_from_the_graph(tiny_models: TinyModels) -> None:
    backend = load_backend(ModelSpec(name="m", path=tiny_models.exported))
    assert backend.inputs == (TensorSpec(name="INPUT__0", datatype="FP32", shape=(-1, IN_FEATURES)),)
    assert backend.outputs == (TensorSpec(name="OUTPUT__0", datatype="FP32", shape=(-1, OUT_FEATURES)),)
    out = backend.infer({"INPUT__0": X})
    np.testing.assert_allclose(out["OUTPUT__0"], tiny_models.reference(X), rtol=1e-5, atol=1e-6)


def test_read_only_inputs_are_accepted_by_torch(tiny_models: TinyModels) -> None:
    backend = load_backend(ModelSpec(name="m", path=tiny_models.torchscript))
    frozen = np.frombuffer(X.tobytes(), dtype=np.float32).reshape(X.shape)  # what binary requests give
    assert not frozen.flags.writeable
    assert backend.infer({"INPUT__0": frozen})["OUTPUT__0"].shape == (3, OUT_FEATURES)


@pytest.mark.parametrize(
    ("available", "device", "expected"),
    [
        ([CUDA, CPU], "auto", [CUDA, CPU]),
        ([CPU], "auto", [CPU]),
        ([CUDA, CPU], "cpu", [CPU]),
        ([CUDA, CPU], "cuda", [CUDA, CPU]),
    ],
)
def test_cuda_provider_is_used_when_present(available: list[str], device: str, expected: list[str]) -> None:
    assert choose_providers(available, device) == expected


def test_asking_for_cuda_without_it_fails() -> None:
    with pytest.raises(BackendError, match="cuda"):
        choose_providers([CPU], "cuda")


def test_missing_file_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        load_backend(ModelSpec(name="m", path=tmp_path / "nope.onnx"))


def test_corrupt_model_is_a_backend_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="could not load"):
        load_backend(ModelSpec(name="m", path=bad))


def test_unknown_suffix_needs_an_explicit_runtime(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="runtime"):
        ModelSpec(name="m", path=tmp_path / "model.bin")
    assert ModelSpec(name="m", path=tmp_path / "model.bin", runtime="onnxruntime").resolved_runtime == "onnxruntime"


def test_onnx_thread_count_is_configurable(tiny_models: TinyModels) -> None:
    backend = load_backend(ModelSpec(name="m", path=tiny_models.onnx, intra_op_threads=1))
    np.testing.assert_allclose(backend.infer({"x": X})["y"], tiny_models.reference(X), rtol=1e-5, atol=1e-6)
