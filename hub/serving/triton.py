"""Export a served model to a Triton model repository (``<repo>/<name>/config.pbtxt`` and
``<repo>/<name>/<version>/model.<ext>``), keeping its dynamic batching settings, so a deployment that
outgrows one machine moves to Triton or KServe with its V2 clients unchanged."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from hub.serving.config import BatchingConfig, ModelSpec, TensorSpec
from hub.serving.errors import BackendError, InvalidInputError

InstanceKind = Literal["auto", "gpu", "cpu"]


class Enum(str):
    """A protobuf enum value: rendered unquoted in text format."""

    __slots__ = ()


_PLATFORMS: dict[str, tuple[str, str]] = {  # runtime -> (Triton platform, model file name)
    "onnxruntime": ("onnxruntime_onnx", "model.onnx"),
    "torchscript": ("pytorch_libtorch", "model.pt"),
}


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    if spec.shape is None:
        raise InvalidInputError(
            f"tensor {spec.name!r} has no known shape; declare inputs/outputs with shapes in the model spec"
        )
    if batched:
        if not spec.shape or spec.shape[0] != -1:
            raise InvalidInputError(f"tensor {spec.name!r} {list(spec.shape)} has no variable batch dim")
        return list(spec.shape[1:])
    return list(spec.shape)


def _tensors(specs: Sequence[TensorSpec], batched: bool) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "data_type": Enum("TYPE_STRING" if s.datatype == "BYTES" else f"TYPE_{s.datatype}"),
            "dims": _dims(s, batched),
        }
        for s in specs
    ]


def triton_config(
    name: str,
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    batching: BatchingConfig,
    instance_kind: InstanceKind = "auto",
) -> dict[str, Any]:
    """Triton's ``ModelConfig`` as a dict (JSON form; :func:`to_pbtxt` renders the text form)."""
    batched = batching.max_batch_size > 0
    config: dict[str, Any] = {
        "name": name,
        "platform": platform,
        "max_batch_size": batching.max_batch_size,
        "version_policy": {"all": {}},
        "input": _tensors(inputs, batched),
        "output": _tensors(outputs, batched),
    }
    if batched:
        policy: dict[str, Any] = {"max_queue_size": batching.max_queue_size}
        if batching.default_timeout_ms is not None:
            policy |= {
                "timeout_action": Enum("REJECT"),
                "default_timeout_microseconds": round(batching.default_timeout_ms * 1000),
                "allow_timeout_override": True,
            }
        config["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": round(batching.max_queue_delay_ms * 1000),
            "default_queue_policy": policy,
        }
    if instance_kind != "auto":
        kind = Enum("KIND_GPU" if instance_kind == "gpu" else "KIND_CPU")
        config["instance_group"] = [{"count": batching.instances, "kind": kind}]
    elif batching.instances > 1:
        config["instance_group"] = [{"count": batching.instances}]
    return config


def to_pbtxt(config: dict[str, Any]) -> str:
    """Render a config dict in protobuf text format."""
    return "".join(_fields(config, 0))


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _fields(message: dict[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    lines: list[str] = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{\n", *_fields(value, depth + 1), f"{pad}}}\n"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{pad}{key} [\n")
            for i, item in enumerate(value):
                lines += [
                    f"{pad}  {{\n",
                    *_fields(item, depth + 2),
                    f"{pad}  }}{',' if i < len(value) - 1 else ''}\n",
                ]
            lines.append(f"{pad}]\n")
        elif isinstance(value, list):
            if value:
                lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]\n")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}\n")
    return lines


def export_triton(
    spec: ModelSpec,
    repo_dir: Path,
    *,
    inputs: Sequence[TensorSpec] | None = None,
    outputs: Sequence[TensorSpec] | None = None,
    instance_kind: InstanceKind = "auto",
) -> Path:
    """Write ``spec`` into the Triton repository at ``repo_dir``; returns the model's directory.

    Tensor specs come from ``inputs``/``outputs``, else the spec, else the model loaded on CPU.
    """
    runtime = spec.resolved_runtime
    if not spec.version.isdigit():
        raise InvalidInputError(f"Triton model versions are integers, not {spec.version!r}")
    if runtime not in _PLATFORMS:
        raise BackendError(f"Triton cannot serve {runtime!r} files; export the model to ONNX or TorchScript")
    platform, filename = _PLATFORMS[runtime]
    ins, outs = inputs or spec.inputs, outputs or spec.outputs
    if ins is None or outs is None:
        from hub.serving.backends import load_backend

        backend = load_backend(spec.model_copy(update={"device": "cpu"}))
        try:
            ins, outs = ins or backend.inputs, outs or backend.outputs
        finally:
            backend.close()
    config = triton_config(spec.name, platform, ins, outs, spec.batching, instance_kind)
    model_dir = repo_dir / spec.name
    version_dir = model_dir / spec.version
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec.path, version_dir / filename)
    for extra in spec.path.parent.glob(f"{spec.path.name}.data"):  # ONNX external weights keep their name
        shutil.copyfile(extra, version_dir / extra.name)
    (model_dir / "config.pbtxt").write_text(to_pbtxt(config))
    return model_dir
