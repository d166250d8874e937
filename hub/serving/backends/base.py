"""The backend interface and the registry of runtimes (import paths, so a missing extra is refused
before anything heavy is imported)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from hub.serving.config import ModelSpec, Runtime, TensorSpec
from hub.serving.errors import BackendError, ServingError


class Backend(Protocol):
    """A loaded model that runs one (already batched) set of inputs at a time per call.

    ``infer`` may be called from several worker threads when a model has several instances.
    """

    platform: str  # Triton's platform name, e.g. "onnxruntime_onnx"
    device: str  # "cpu" or "cuda"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; returns one array per output name."""
        ...

    def close(self) -> None:
        """Release the runtime's resources."""
        ...


# runtime -> (import path of the backend class, module that must be importable, extra to install)
BACKENDS: dict[Runtime, tuple[str, str, str]] = {
    "onnxruntime": ("hub.serving.backends.ort:OrtBackend", "onnxruntime", "edgefleet[hub]"),
    "torchscript": ("hub.serving.backends.pytorch:TorchScriptBackend", "torch", "edgefleet[convert]"),
    "torch_export": ("hub.serving.backends.pytorch:ExportedProgramBackend", "torch", "edgefleet[convert]"),
}


def load_backend(spec: ModelSpec) -> Backend:
    """Load ``spec`` with its runtime; every failure is raised as :class:`BackendError`."""
    runtime = spec.resolved_runtime
    target, needs, extra = BACKENDS[runtime]
    if importlib.util.find_spec(needs) is None:
        raise BackendError(f"runtime {runtime!r} needs {needs}: pip install '{extra}'")
    if not spec.path.is_file():
        raise BackendError(f"model file {spec.path} does not exist")
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    try:
        backend: Backend = cls(spec)
    except ServingError:
        raise
    except Exception as exc:
        raise BackendError(f"{runtime} could not load {spec.path.name}: {exc}") from exc
    return backend
