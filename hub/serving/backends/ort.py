"""ONNX Runtime backend: CUDA execution provider when a GPU is present (or asked for), CPU otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hub.serving.config import ModelSpec, TensorSpec
from hub.serving.errors import BackendError

_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(available: list[str], device: str) -> list[str]:
    """Execution providers for ``device`` ("auto", "cpu", "cuda") given what this build offers."""
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise BackendError(f"device 'cuda' asked for but onnxruntime offers only {available}")
    return [CPU]


def _spec(arg: Any) -> TensorSpec:
    datatype = _ORT_TYPES.get(arg.type)
    if datatype is None:
        raise BackendError(f"tensor {arg.name!r} has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(name=arg.name, datatype=datatype, shape=shape)


class OrtBackend:
    """An ``onnxruntime.InferenceSession`` (thread-safe ``run``)."""

    platform = "onnxruntime_onnx"

    def __init__(self, spec: ModelSpec) -> None:
        import onnxruntime as ort

        providers = choose_providers(ort.get_available_providers(), spec.device)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle intra-op threads must not spin: they would starve the event loop that parses requests
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if spec.intra_op_threads is not None:
            options.intra_op_num_threads = spec.intra_op_threads
        self._session = ort.InferenceSession(str(spec.path), sess_options=options, providers=providers)
        self.device = "cuda" if self._session.get_providers()[0] == CUDA else "cpu"
        self.inputs = spec.inputs or tuple(_spec(a) for a in self._session.get_inputs())
        self.outputs = spec.outputs or tuple(_spec(a) for a in self._session.get_outputs())
        self._output_names = [o.name for o in self.outputs]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the session on numpy inputs."""
        results = self._session.run(self._output_names, dict(inputs))
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        """Drop the session."""
        self._session = None
