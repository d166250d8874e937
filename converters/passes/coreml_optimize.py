"""Core ML weight compression through coremltools.optimize: linear int8 quantization, palettization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.errors import ConversionError
from converters.exporters._torch import captured_stderr
from converters.pipeline import CoreMLPalettizeStep, CoreMLQuantizeStep
from converters.quiet import quiet_toolchains
from converters.types import Artifact, StepContext


def _compress(artifact: Artifact, out: Path, stage: str, target: str, apply: Any) -> list[str]:
    try:
        with quiet_toolchains(), captured_stderr():
            import coremltools as ct

            mlmodel = ct.models.MLModel(str(artifact.path), skip_model_load=True)
            apply(mlmodel).save(str(out / "model.mlpackage"))
    except Exception as exc:
        raise ConversionError(f"{stage} failed: {exc}", target=target, stage=stage) from exc
    path = out / "model.mlpackage"
    return [str(p.relative_to(out)) for p in sorted(path.rglob("*")) if p.is_file()]


class CoreMLQuantizePass:
    """``coreml_quantize``: int8 linear weight quantization (activations stay fp16)."""

    def __init__(self, config: CoreMLQuantizeStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def run(self, artifact: Artifact, out: Path) -> Artifact:
        def apply(mlmodel: Any) -> Any:
            import coremltools.optimize as cto

            op_config = cto.coreml.OpLinearQuantizerConfig(
                mode=self.config.mode,
                granularity=self.config.granularity,
                weight_threshold=self.config.weight_threshold,
            )
            return cto.coreml.linear_quantize_weights(mlmodel, cto.coreml.OptimizationConfig(global_config=op_config))

        files = _compress(artifact, out, "coreml_quantize", self.context.target.name, apply)
        meta = dict(artifact.meta, weights="int8", quantization=self.config.mode)
        return Artifact(out, "model.mlpackage", "coreml", "int8", tuple(files), meta)


class CoreMLPalettizePass:
    """``coreml_palettize``: weights replaced by indices into a ``2**nbits`` lookup table."""

    def __init__(self, config: CoreMLPalettizeStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def run(self, artifact: Artifact, out: Path) -> Artifact:
        def apply(mlmodel: Any) -> Any:
            import coremltools.optimize as cto

            op_config = cto.coreml.OpPalettizerConfig(
                nbits=self.config.nbits, mode=self.config.mode, weight_threshold=self.config.weight_threshold
            )
            return cto.coreml.palettize_weights(mlmodel, cto.coreml.OptimizationConfig(global_config=op_config))

        files = _compress(artifact, out, "coreml_palettize", self.context.target.name, apply)
        meta = dict(artifact.meta, weights=f"palettized-{self.config.nbits}bit")
        return Artifact(out, "model.mlpackage", "coreml", "palettized", tuple(files), meta)
