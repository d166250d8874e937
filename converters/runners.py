"""Load a variant in its runtime on this host and run it: one `Runner` per format.

A runner maps a batch of named numpy inputs to the primary output. `executable_here` says whether a
target's runtime can run here at all (Core ML needs macOS; TensorRT/CUDA need an NVIDIA GPU).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from converters.errors import ExecutionError
from converters.registry import RUNTIME_MODULES, module_available
from converters.types import Artifact
from targets import Target

RunnerFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def executable_here(target: Target, artifact: Artifact) -> tuple[bool, str]:
    """(True, "") if this host can execute the variant as the target would, else (False, why)."""
    if artifact.format == "coreml" and sys.platform != "darwin":
        return False, "Core ML models execute only on macOS/iOS; converted on this host but not run"
    module = RUNTIME_MODULES.get(target.runtime)
    if module and not module_available(module):
        return False, f"runtime module {module!r} is not installed here"
    if artifact.format == "onnx" and target.accelerator == "gpu":
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        wanted = [p for p in target.execution_providers if p in _GPU_PROVIDERS]
        if not any(p in available for p in wanted):
            return False, f"{' / '.join(wanted)} not available on this host (no NVIDIA GPU runtime)"
    return True, ""


def load_runner(target: Target, artifact: Artifact, threads: int = 2) -> RunnerFn:
    """Load ``artifact`` in its runtime; raise `ExecutionError` if it cannot be loaded."""
    loaders = {
        "onnx": _onnx,
        "tflite": _tflite,
        "openvino": _openvino,
        "torchscript": _torchscript,
        "coreml": _coreml,
    }
    try:
        return loaders[artifact.format](target, artifact, threads)
    except ExecutionError:
        raise
    except Exception as exc:
        raise ExecutionError(
            f"cannot load {artifact.path.name} in {target.runtime}: {exc}", target=target.name, stage="load"
        ) from exc


def _onnx(target: Target, artifact: Artifact, threads: int) -> RunnerFn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    available = set(ort.get_available_providers())
    providers = [p for p in target.execution_providers if p in available] or ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(artifact.path), options, providers=providers)
    names = [i.name for i in session.get_inputs()]

    def run(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(session.run(None, {n: batch[n] for n in names})[0])

    return run


def _tflite(target: Target, artifact: Artifact, threads: int) -> RunnerFn:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifact.path), num_threads=threads)
    interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    names = list(artifact.meta.get("input_names", []))
    source_dtypes = list(artifact.meta.get("input_dtypes", []))
    if len(names) != len(inputs):
        raise ExecutionError(f"{artifact.path.name}: {len(inputs)} inputs, metadata names {names}")

    def prepare(value: np.ndarray, detail: dict[str, Any], source_dtype: str) -> np.ndarray:
        dtype = np.dtype(detail["dtype"])
        scale, zero = detail["quantization"]
        if dtype in (np.int8, np.uint8) and np.dtype(source_dtype).kind == "f" and scale:
            info = np.iinfo(dtype)
            return np.clip(np.round(value / scale + zero), info.min, info.max).astype(dtype)
        return value.astype(dtype)

    def one(sample: list[np.ndarray]) -> np.ndarray:
        for value, detail, source_dtype in zip(sample, inputs, source_dtypes, strict=True):
            if tuple(detail["shape"]) != value.shape:
                interpreter.resize_tensor_input(detail["index"], list(value.shape))
                interpreter.allocate_tensors()
            interpreter.set_tensor(detail["index"], prepare(value, detail, source_dtype))
        interpreter.invoke()
        detail = outputs[0]
        result = interpreter.get_tensor(detail["index"])
        scale, zero = detail["quantization"]
        if np.dtype(detail["dtype"]) in (np.int8, np.uint8) and scale:
            result = (result.astype(np.float32) - zero) * scale
        return np.asarray(result)

    def run(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        arrays = [batch[n] for n in names]
        return np.concatenate([one([a[i : i + 1] for a in arrays]) for i in range(len(arrays[0]))])

    return run


def _openvino(target: Target, artifact: Artifact, threads: int) -> RunnerFn:
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": openvino_precision(artifact.precision)}
    compiled = ov.Core().compile_model(str(artifact.path), "CPU", config)
    request = compiled.create_infer_request()
    names = list(artifact.meta.get("input_names", []))

    def run(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        result = request.infer({n: batch[n] for n in names})
        return np.asarray(result[compiled.outputs[0]]).copy()

    actual = compiled.get_property("INFERENCE_PRECISION_HINT")
    run.info = {"inference_precision": actual.to_string()}  # type: ignore[attr-defined]
    return run


def openvino_precision(precision: str) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for a variant's precision. The CPU plugin otherwise
    computes in bf16 wherever the CPU supports it; an fp16 variant stores fp16 weights and computes in
    f32, an int8 one keeps its non-quantized operations in f32, and bf16 runs only when labelled so."""
    return {"bf16": "bf16"}.get(precision, "f32")


def _torchscript(target: Target, artifact: Artifact, threads: int) -> RunnerFn:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)  # the same intra-op thread count as the other runtimes
    module = torch.jit.load(str(artifact.path), map_location="cpu").eval()
    names = list(artifact.meta.get("input_names", []))

    def run(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            output = module(*(torch.from_numpy(np.ascontiguousarray(batch[n])) for n in names))
        while isinstance(output, (tuple, list)):
            output = output[0]
        return output.numpy()

    return run


def _coreml(target: Target, artifact: Artifact, threads: int) -> RunnerFn:  # pragma: no cover - macOS only
    import coremltools as ct

    model = ct.models.MLModel(str(artifact.path))
    names = list(artifact.meta.get("input_names", []))

    def run(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        rows = []
        for i in range(len(batch[names[0]])):
            result = model.predict({n: batch[n][i : i + 1] for n in names})
            rows.append(np.asarray(next(iter(result.values()))))
        return np.concatenate(rows)

    return run
