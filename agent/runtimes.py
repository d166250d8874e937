"""Model runtimes, chosen by the bundle's manifest. Each runtime library is imported only when used."""

from __future__ import annotations

import io
import platform
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agent.errors import InferenceError, RuntimeUnavailableError
from fleet.wire.bundle import BundleManifest


class Runtime(Protocol):
    """A loaded model: one batch in, raw outputs out."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a batch shaped like the manifest's input."""


class OnnxRuntime:
    """ONNX Runtime on the CPU (or the providers the target lists, where installed)."""

    def __init__(self, model_bytes: bytes, providers: tuple[str, ...] = ()) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailableError("onnxruntime is not installed: pip install onnxruntime") from exc
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(model_bytes, sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise RuntimeUnavailableError(f"onnxruntime cannot load the model: {exc}") from exc
        self._input = self._session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch."""
        try:
            return np.asarray(self._session.run(None, {self._input: batch})[0])
        except Exception as exc:
            raise InferenceError(f"onnxruntime rejected input of shape {batch.shape}: {_first_line(exc)}") from exc


class LiteRtRuntime:
    """LiteRT interpreter (ai-edge-litert, falling back to tflite-runtime); quantises int8 inputs itself."""

    def __init__(self, model_bytes: bytes) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter
            except ImportError as exc:
                raise RuntimeUnavailableError("no LiteRT interpreter: pip install ai-edge-litert") from exc
        try:
            self._interpreter = Interpreter(model_content=model_bytes)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RuntimeUnavailableError(f"LiteRT cannot load the model: {exc}") from exc
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run each row (LiteRT models have a fixed batch dimension), applying int8 (de)quantisation."""
        rows = []
        for row in batch:
            x = row[None, ...]
            scale, zero = self._input.get("quantization", (0.0, 0))
            if self._input["dtype"] in (np.int8, np.uint8) and scale:
                info = np.iinfo(self._input["dtype"])
                x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self._input["dtype"])
            else:
                x = x.astype(self._input["dtype"])
            try:
                self._interpreter.set_tensor(self._input["index"], x)
                self._interpreter.invoke()
            except (ValueError, RuntimeError) as exc:
                raise InferenceError(f"LiteRT rejected input of shape {batch.shape}: {_first_line(exc)}") from exc
            y = self._interpreter.get_tensor(self._output["index"])
            out_scale, out_zero = self._output.get("quantization", (0.0, 0))
            if self._output["dtype"] in (np.int8, np.uint8) and out_scale:
                y = (y.astype(np.float32) - out_zero) * out_scale
            rows.append(y[0])
        return np.stack(rows)


class RowByRow:
    """A model exported with a fixed batch of 1 (a ``torch.export`` without dynamic shapes, a traced module):
    each row of a batch runs alone and the outputs are stacked."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run each row of ``batch`` as a batch of one."""
        return np.concatenate([self._runtime.run(batch[i : i + 1]) for i in range(len(batch))])


def openvino_precision(precision: str) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for a variant's precision (as the converters measured it).

    The CPU plugin otherwise computes in bf16 wherever the CPU supports it; fp16 variants store fp16
    weights and compute in f32, int8 ones keep their float operations in f32, bf16 runs only if labelled.
    """
    return {"bf16": "bf16"}.get(precision, "f32")


class OpenVinoRuntime:
    """OpenVINO on the CPU; the bundle carries an ONNX file or an IR pair (``.xml`` with its ``.bin``).

    Inference runs in the precision the variant is labelled with (`openvino_precision`)."""

    def __init__(self, model_bytes: bytes, weights: bytes | None = None, precision: str = "fp32") -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeUnavailableError("openvino is not installed: pip install openvino") from exc
        core = ov.Core()
        with tempfile.TemporaryDirectory() as tmp:
            if weights is None:
                path = Path(tmp) / "model.onnx"
                path.write_bytes(model_bytes)
                model = core.read_model(str(path))
            else:
                (Path(tmp) / "model.xml").write_bytes(model_bytes)
                (Path(tmp) / "model.bin").write_bytes(weights)
                model = core.read_model(str(Path(tmp) / "model.xml"))
            config = {"INFERENCE_PRECISION_HINT": openvino_precision(precision)}
            self._compiled = core.compile_model(model, "CPU", config)
        self.inference_precision: str = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch."""
        try:
            return np.asarray(self._compiled(batch)[0])
        except RuntimeError as exc:  # OpenVINO's shape and type errors
            raise InferenceError(f"OpenVINO rejected input of shape {batch.shape}: {_first_line(exc)}") from exc


class TorchScriptRuntime:
    """A TorchScript module through libtorch (install the ``agent-torch`` extra: torch is not in the
    default agent install)."""

    def __init__(self, model_bytes: bytes, threads: int = 1) -> None:
        try:
            import torch
        except ImportError as exc:
            raise RuntimeUnavailableError("TorchScript needs torch: pip install edgefleet[agent-torch]") from exc
        torch.set_num_threads(threads)
        try:
            self._module = torch.jit.load(io.BytesIO(model_bytes), map_location="cpu").eval()
        except Exception as exc:  # torch raises RuntimeError and friends for corrupt archives
            raise RuntimeUnavailableError(f"TorchScript cannot load the model: {exc}") from exc
        self._torch = torch

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch."""
        try:
            with self._torch.no_grad():
                return self._first(self._module(self._torch.from_numpy(np.ascontiguousarray(batch))))
        except Exception as exc:
            raise InferenceError(f"TorchScript rejected input of shape {batch.shape}: {_first_line(exc)}") from exc

    @staticmethod
    def _first(output: Any) -> np.ndarray:
        while isinstance(output, (tuple, list)):
            output = output[0]
        return np.asarray(output.numpy())


class CoreMLRuntime:
    """Core ML through coremltools' prediction API (macOS only). The bundle carries an ``.mlmodel``
    file or a zip of an ``.mlpackage`` directory."""

    def __init__(self, model_bytes: bytes) -> None:
        if platform.system() != "Darwin":
            raise RuntimeUnavailableError(
                f"Core ML models run only on macOS/iOS; this device runs {platform.system()}. "
                "Deploy a variant for this device's target instead."
            )
        try:
            import coremltools as ct
        except ImportError as exc:
            raise RuntimeUnavailableError("Core ML needs coremltools: pip install coremltools") from exc
        self._dir = tempfile.TemporaryDirectory(prefix="coreml-")
        root = Path(self._dir.name)
        if model_bytes[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
                archive.extractall(root / "model.mlpackage")
            path = root / "model.mlpackage"
            inner = [p.parent for p in path.rglob("Manifest.json")]
            path = inner[0] if inner else path
        else:
            path = root / "model.mlmodel"
            path.write_bytes(model_bytes)
        try:
            self._model = ct.models.MLModel(str(path))
        except Exception as exc:
            raise RuntimeUnavailableError(f"Core ML cannot load the model: {exc}") from exc
        self._input = self._model.get_spec().description.input[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run each row through ``MLModel.predict`` (converted models have a batch of 1)."""
        rows = []
        for row in batch:
            try:
                result = self._model.predict({self._input: row[None, ...]})
            except Exception as exc:
                raise InferenceError(f"Core ML rejected input of shape {row.shape}: {exc}") from exc
            rows.append(np.asarray(next(iter(result.values())))[0])
        return np.stack(rows)


def load_runtime(manifest: BundleManifest, model_bytes: bytes, extra: dict[str, bytes] | None = None) -> Runtime:
    """Load ``model_bytes`` with the runtime the manifest names, or raise `RuntimeUnavailableError`."""
    from targets import TARGETS

    target = TARGETS.get(manifest.target)
    providers = target.execution_providers if target else ()
    runtime: Any
    if manifest.runtime == "onnxruntime":
        runtime = OnnxRuntime(model_bytes, providers)
    elif manifest.runtime == "litert":
        runtime = LiteRtRuntime(model_bytes)
    elif manifest.runtime == "openvino":
        runtime = OpenVinoRuntime(model_bytes, (extra or {}).get("weights"), manifest.precision)
    elif manifest.runtime == "coreml":
        runtime = CoreMLRuntime(model_bytes)
    elif manifest.runtime == "torchscript":
        runtime = TorchScriptRuntime(model_bytes)
    else:
        raise RuntimeUnavailableError(f"runtime {manifest.runtime!r} is not supported by this agent")
    if manifest.input.shape[:1] == [1] and manifest.runtime in ("onnxruntime", "openvino", "torchscript"):
        return RowByRow(runtime)  # LiteRT and Core ML already run row by row
    return runtime


def _first_line(exc: Exception) -> str:
    """A runtime's error in one line (OpenVINO's carry a multi-line C++ trace)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
