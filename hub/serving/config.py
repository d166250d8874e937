"""Validated configuration of served models: tensor specs, dynamic batching, and the model spec that a
:class:`~hub.serving.repository.ModelRepository` resolves a name and version to."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Runtime = Literal["onnxruntime", "torchscript", "torch_export"]
Device = Literal["auto", "cpu", "cuda"]

_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
_SUFFIX_RUNTIME: dict[str, Runtime] = {
    ".onnx": "onnxruntime",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".pt2": "torch_export",
}


class TensorSpec(BaseModel):
    """One model input or output: V2 datatype and full shape (``-1`` for a variable dimension, the batch
    dimension included when the model batches; ``None`` when the runtime cannot tell)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    datatype: str = "FP32"
    shape: tuple[int, ...] | None = None


class BatchingConfig(BaseModel):
    """Dynamic batching for one model, after Triton's ``dynamic_batching`` block.

    ``max_batch_size`` 0 turns batching off: each request runs alone, its shape passed through as is.
    A batch leaves the queue when it reaches ``max_batch_size`` rows or one of ``preferred_batch_sizes``,
    or when its oldest request has waited ``max_queue_delay_ms``.
    """

    model_config = ConfigDict(frozen=True)

    max_batch_size: int = Field(default=32, ge=0, le=65536)
    max_queue_delay_ms: float = Field(default=2.0, ge=0.0, le=60_000.0)
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = Field(default=1024, ge=1)
    default_timeout_ms: float | None = Field(default=30_000.0, gt=0.0)
    instances: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _preferred_fit(self) -> BatchingConfig:
        for size in self.preferred_batch_sizes:
            if size < 1 or size > max(self.max_batch_size, 1):
                raise ValueError(f"preferred batch size {size} must lie in 1..max_batch_size ({self.max_batch_size})")
        return self


class ModelSpec(BaseModel):
    """Everything needed to serve one version of one model."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=_NAME)
    version: str = Field(default="1", pattern=_NAME)
    path: Path
    runtime: Runtime | None = None
    device: Device = "auto"
    fp16: bool = Field(default=True, description="run float models in fp16 on GPU (torch runtimes)")
    intra_op_threads: int | None = Field(
        default=None, ge=1, description="ONNX Runtime threads per model instance (None: runtime default)"
    )
    batching: BatchingConfig = BatchingConfig()
    inputs: tuple[TensorSpec, ...] | None = Field(
        default=None, description="declare inputs when the runtime cannot report them (TorchScript)"
    )
    outputs: tuple[TensorSpec, ...] | None = None

    @model_validator(mode="after")
    def _runtime_known(self) -> ModelSpec:
        if self.runtime is None and self.path.suffix.lower() not in _SUFFIX_RUNTIME:
            raise ValueError(
                f"cannot tell the runtime of {self.path.name!r}: "
                f"use a suffix in {sorted(_SUFFIX_RUNTIME)} or set runtime"
            )
        return self

    @property
    def resolved_runtime(self) -> Runtime:
        """The runtime, taken from the file suffix when not set explicitly."""
        return self.runtime or _SUFFIX_RUNTIME[self.path.suffix.lower()]


class ServingConfig(BaseModel):
    """A serving configuration file: the models to load at start-up."""

    models: list[ModelSpec] = Field(default_factory=list)
