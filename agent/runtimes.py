"""Model runtimes, chosen by the bundle's manifest. Each runtime library is imported only when used."""

from __future__ import annotations

import platform
import tempfile
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
            raise InferenceError(f"onnxruntime rejected input of shape {batch.shape}: {exc}") from exc


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
            self._interpreter.set_tensor(self._input["index"], x)
            self._interpreter.invoke()
            y = self._interpreter.get_tensor(self._output["index"])
            out_scale, out_zero = self._output.get("quantization", (0.0, 0))
            if self._output["dtype"] in (np.int8, np.uint8) and out_scale:
                y = (y.astype(np.float32) - out_zero) * out_scale
            rows.append(y[0])
        return np.stack(rows)


class OpenVinoRuntime:
    """OpenVINO on the CPU; the bundle carries an ONNX file or an IR pair (``.xml`` with its ``.bin``)."""

    def __init__(self, model_bytes: bytes, weights: bytes | None = None) -> None:
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
            self._compiled = core.compile_model(model, "CPU")

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch."""
        return np.asarray(self._compiled(batch)[0])


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
        runtime = OpenVinoRuntime(model_bytes, (extra or {}).get("weights"))
    elif manifest.runtime == "coreml":
        if platform.system() != "Darwin":
            raise RuntimeUnavailableError(
                f"Core ML models run only on macOS/iOS; this device runs {platform.system()}. "
                "Deploy a variant for this device's target instead."
            )
        raise RuntimeUnavailableError("the Core ML runtime is not bundled with this agent build")
    else:
        raise RuntimeUnavailableError(f"runtime {manifest.runtime!r} is not supported by this agent")
    return runtime
