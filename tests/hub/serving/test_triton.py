"""Export to a Triton model repository; config.pbtxt is checked against Triton's own ModelConfig proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hub.serving import (
    BackendError,
    BatchingConfig,
    InvalidInputError,
    ModelSpec,
    TensorSpec,
    export_triton,
    load_backend,
)
from tests.hub.serving.conftest import IN_FEATURES, OUT_FEATURES, TinyModels

BATCHING = BatchingConfig(
    max_batch_size=16,
    preferred_batch_sizes=(4, 8),
    max_queue_delay_ms=0.5,
    max_queue_size=64,
    default_timeout_ms=2000,
    instances=2,
)


def _model_config_pb2() -> ModuleType:
    """Triton's ModelConfig proto, shipped in tritonclient (loaded without its grpc package)."""
    tritonclient = pytest.importorskip("tritonclient")
    pytest.importorskip("google.protobuf")
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        pytest.skip("tritonclient ships no model_config_pb2")
    spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse(config_path: Path) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(config_path.read_text(), _model_config_pb2().ModelConfig())


def test_onnx_export_writes_a_valid_triton_repository(tiny_models: TinyModels, tmp_path: Path) -> None:
    spec = ModelSpec(name="mlp", version="3", path=tiny_models.onnx, batching=BATCHING)
    model_dir = export_triton(spec, tmp_path / "repo", instance_kind="gpu")
    assert model_dir == tmp_path / "repo" / "mlp"
    exported = model_dir / "3" / "model.onnx"
    assert exported.is_file()
    # the copy still loads (external weights, if any, travel with it)
    assert load_backend(ModelSpec(name="mlp", path=exported)).inputs[0].shape == (-1, IN_FEATURES)

    config = _parse(model_dir / "config.pbtxt")
    assert config.name == "mlp" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    (inp,) = config.input
    assert inp.name == "x" and list(inp.dims) == [IN_FEATURES]
    assert inp.data_type == _model_config_pb2().TYPE_FP32
    (out,) = config.output
    assert out.name == "y" and list(out.dims) == [OUT_FEATURES]
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == [4, 8]
    assert batching.max_queue_delay_microseconds == 500
    assert batching.default_queue_policy.max_queue_size == 64
    assert batching.default_queue_policy.default_timeout_microseconds == 2_000_000
    assert batching.default_queue_policy.allow_timeout_override
    (group,) = config.instance_group
    assert group.count == 2 and group.kind == _model_config_pb2().ModelInstanceGroup.KIND_GPU
    assert config.version_policy.HasField("all")


def test_unbatched_export_keeps_full_dims_and_no_batcher(tiny_models: TinyModels, tmp_path: Path) -> None:
    spec = ModelSpec(name="mlp", path=tiny_models.onnx, batching=BatchingConfig(max_batch_size=0))
    config = _parse(export_triton(spec, tmp_path) / "config.pbtxt")
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [-1, IN_FEATURES]
    assert not config.HasField("dynamic_batching")


def test_torchscript_export_needs_declared_shapes(tiny_models: TinyModels, tmp_path: Path) -> None:
    bare = ModelSpec(name="ts", path=tiny_models.torchscript)
    with pytest.raises(InvalidInputError, match="no known shape"):
        export_triton(bare, tmp_path)
    declared = bare.model_copy(
        update={
            "inputs": (TensorSpec(name="INPUT__0", shape=(-1, IN_FEATURES)),),
            "outputs": (TensorSpec(name="OUTPUT__0", shape=(-1, OUT_FEATURES)),),
        }
    )
    model_dir = export_triton(declared, tmp_path)
    assert (model_dir / "1" / "model.pt").is_file()
    config = _parse(model_dir / "config.pbtxt")
    assert config.platform == "pytorch_libtorch"
    assert [i.name for i in config.input] == ["INPUT__0"]


def test_exported_programs_and_named_versions_are_refused(tiny_models: TinyModels, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="ONNX or TorchScript"):
        export_triton(ModelSpec(name="ep", path=tiny_models.exported), tmp_path)
    with pytest.raises(InvalidInputError, match="integers"):
        export_triton(ModelSpec(name="m", version="beta", path=tiny_models.onnx), tmp_path)
