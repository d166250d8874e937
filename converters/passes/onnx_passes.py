"""ONNX graph passes: offline graph optimization/fusion and float16 conversion."""

from __future__ import annotations

from pathlib import Path

from converters.errors import ConversionError
from converters.pipeline import Fp16Step, GraphOptimizeStep
from converters.quiet import quiet_toolchains
from converters.types import Artifact, StepContext


def _onnx_artifact(source: Artifact, out: Path, precision: str, **meta: object) -> Artifact:
    merged = dict(source.meta)
    merged.update(meta)
    return Artifact(out, "model.onnx", "onnx", precision, ("model.onnx",), merged)


class GraphOptimizePass:
    """``graph_optimize``: ONNX Runtime's offline constant folding, fusion and layout passes."""

    def __init__(self, config: GraphOptimizeStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def run(self, artifact: Artifact, out: Path) -> Artifact:
        import onnxruntime as ort

        levels = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[self.config.level]
        options.optimized_model_filepath = str(out / "model.onnx")
        try:
            ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ConversionError(
                f"graph optimization failed: {exc}", target=self.context.target.name, stage="graph_optimize"
            ) from exc
        return _onnx_artifact(artifact, out, artifact.precision, graph_optimization=self.config.level)


class Fp16Pass:
    """``fp16``: float16 weights and compute, float32 inputs/outputs kept when ``keep_io_types``."""

    def __init__(self, config: Fp16Step, context: StepContext) -> None:
        self.config = config
        self.context = context

    def run(self, artifact: Artifact, out: Path) -> Artifact:
        import onnx

        try:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            with quiet_toolchains():
                model = onnx.load(str(artifact.path))
                converted = convert_float_to_float16(model, keep_io_types=self.config.keep_io_types)
                onnx.save_model(converted, str(out / "model.onnx"))
        except Exception as exc:
            raise ConversionError(
                f"fp16 conversion failed: {exc}", target=self.context.target.name, stage="fp16"
            ) from exc
        return _onnx_artifact(artifact, out, "fp16", keep_io_types=self.config.keep_io_types)
