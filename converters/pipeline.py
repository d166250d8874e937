"""Pipelines as validated config: an ordered list of steps, each named by its ``type``.

A pipeline has at most one step per stage kind, in this order: *source passes* that change the
PyTorch module (``prune``, ``distill``), exactly one *export* step, then *artifact passes* that work
on the exported file (``int8_static``, ``nncf_ptq``, ``coreml_palettize`` ...). Each artifact pass
names the format it accepts, so ``[{"type": "litert_export"}, {"type": "int8_static"}]`` is refused
before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from converters.errors import PipelineConfigError

Format = Literal["onnx", "tflite", "openvino", "coreml", "torchscript"]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["source", "export", "artifact"] = "artifact"
    accepts: tuple[Format, ...] = ()


# --- source passes (PyTorch module -> PyTorch module) -------------------------------------------
class PruneStep(_Step):
    """Magnitude pruning of Linear/Conv weights; structured removes whole output channels."""

    type: Literal["prune"] = "prune"
    kind: Literal["source"] = "source"
    amount: float = Field(0.3, gt=0.0, lt=1.0)
    structured: bool = False
    finetune_epochs: int = Field(0, ge=0)
    learning_rate: float = Field(1e-3, gt=0)


class DistillStep(_Step):
    """Knowledge distillation of the source (teacher) into a smaller student built by ``student``.

    ``student`` is an import path ``"package.module:factory"`` returning an ``nn.Module``.
    """

    type: Literal["distill"] = "distill"
    kind: Literal["source"] = "source"
    student: str = Field(pattern=r"^[\w.]+:[\w]+$")
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    epochs: int = Field(5, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)


# --- exporters -----------------------------------------------------------------------------------
class OnnxExportStep(_Step):
    type: Literal["onnx_export"] = "onnx_export"
    kind: Literal["export"] = "export"
    opset: int = Field(18, ge=13, le=23)


class LiteRTExportStep(_Step):
    type: Literal["litert_export"] = "litert_export"
    kind: Literal["export"] = "export"


class OpenVINOExportStep(_Step):
    type: Literal["openvino_export"] = "openvino_export"
    kind: Literal["export"] = "export"
    compress_to_fp16: bool = False


class CoreMLExportStep(_Step):
    type: Literal["coreml_export"] = "coreml_export"
    kind: Literal["export"] = "export"
    precision: Literal["fp16", "fp32"] = "fp16"
    minimum_deployment_target: Literal["iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15"] = "iOS17"


class TorchScriptExportStep(_Step):
    type: Literal["torchscript_export"] = "torchscript_export"
    kind: Literal["export"] = "export"
    method: Literal["trace", "script"] = "trace"


# --- artifact passes -----------------------------------------------------------------------------
class GraphOptimizeStep(_Step):
    """ONNX Runtime offline graph optimization and operator fusion."""

    type: Literal["graph_optimize"] = "graph_optimize"
    accepts: tuple[Format, ...] = ("onnx",)
    level: Literal["basic", "extended", "all"] = "extended"


class TransformerOptimizeStep(_Step):
    """ONNX Runtime's transformer fusions (attention, skip LayerNorm, GELU) before quantizing, so int8
    reaches the fused kernels (QAttention). ``model_type`` ``auto`` and ``num_heads``/``hidden_size``
    0 take the source's config (``transformers`` models, ``nn.MultiheadAttention``), else the graph."""

    type: Literal["transformer_optimize"] = "transformer_optimize"
    accepts: tuple[Format, ...] = ("onnx",)
    model_type: Literal["auto", "bert", "bart", "gpt2", "t5", "vit", "clip", "swin", "conformer"] = "auto"
    num_heads: int = Field(0, ge=0)
    hidden_size: int = Field(0, ge=0)


class Fp16Step(_Step):
    """Convert ONNX weights and compute to float16, keeping float32 inputs and outputs."""

    type: Literal["fp16"] = "fp16"
    accepts: tuple[Format, ...] = ("onnx",)
    keep_io_types: bool = True


class Int8DynamicStep(_Step):
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized at run time."""

    type: Literal["int8_dynamic"] = "int8_dynamic"
    accepts: tuple[Format, ...] = ("onnx",)
    per_channel: bool = False
    op_types: tuple[str, ...] = ()  # operator types to quantize, e.g. ("MatMul",); empty: all supported


class Int8StaticStep(_Step):
    """ONNX Runtime static QDQ quantization calibrated on the calibration data."""

    type: Literal["int8_static"] = "int8_static"
    accepts: tuple[Format, ...] = ("onnx",)
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, gt=90.0, le=100.0)
    per_channel: bool = True
    nodes_to_exclude: tuple[str, ...] = ()
    exclude_first_last: bool = False
    activation_matmuls: bool = True  # False keeps activation x activation MatMuls (attention) in float
    activation_type: Literal["int8", "uint8"] = "uint8"
    op_types: tuple[str, ...] = ()  # operator types to quantize, e.g. ("MatMul",); empty: all supported
    max_calibration_samples: int = Field(128, ge=1)


class NNCFStep(_Step):
    """NNCF post-training quantization of an OpenVINO IR."""

    type: Literal["nncf_ptq"] = "nncf_ptq"
    accepts: tuple[Format, ...] = ("openvino",)
    preset: Literal["performance", "mixed"] = "performance"
    transformer: bool = False
    fast_bias_correction: bool = True
    ignore_last_layer: bool = False
    subset_size: int = Field(128, ge=1)


class LiteRTInt8Step(_Step):
    """int8 LiteRT model: ``static`` is full integer (``int8_io`` also makes inputs and outputs int8),
    ``dynamic_range`` has per-channel int8 weights and activations quantized at run time (no
    calibration; ``per_channel`` applies to ``static``).

    LiteRT quantizes during conversion, so this pass is applied by the ``litert_export`` step.
    """

    type: Literal["litert_int8"] = "litert_int8"
    accepts: tuple[Format, ...] = ("tflite",)
    mode: Literal["static", "dynamic_range"] = "static"
    int8_io: bool = False
    per_channel: bool = True
    max_calibration_samples: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _io_needs_static(self) -> LiteRTInt8Step:
        if self.int8_io and self.mode == "dynamic_range":
            raise ValueError("int8_io needs mode 'static' (dynamic range keeps float inputs and outputs)")
        return self


class CoreMLQuantizeStep(_Step):
    """coremltools.optimize linear weight quantization (int8 weights)."""

    type: Literal["coreml_quantize"] = "coreml_quantize"
    accepts: tuple[Format, ...] = ("coreml",)
    mode: Literal["linear_symmetric", "linear"] = "linear_symmetric"
    granularity: Literal["per_tensor", "per_channel"] = "per_channel"
    weight_threshold: int = Field(0, ge=0)


class CoreMLPalettizeStep(_Step):
    """coremltools.optimize k-means weight palettization to ``nbits`` per weight."""

    type: Literal["coreml_palettize"] = "coreml_palettize"
    accepts: tuple[Format, ...] = ("coreml",)
    nbits: Literal[1, 2, 3, 4, 6, 8] = 6
    mode: Literal["kmeans", "uniform"] = "kmeans"
    weight_threshold: int = Field(0, ge=0)


Step = Annotated[
    PruneStep
    | DistillStep
    | OnnxExportStep
    | LiteRTExportStep
    | OpenVINOExportStep
    | CoreMLExportStep
    | TorchScriptExportStep
    | GraphOptimizeStep
    | TransformerOptimizeStep
    | Fp16Step
    | Int8DynamicStep
    | Int8StaticStep
    | NNCFStep
    | LiteRTInt8Step
    | CoreMLQuantizeStep
    | CoreMLPalettizeStep,
    Field(discriminator="type"),
]

EXPORT_FORMATS: dict[str, Format] = {
    "onnx_export": "onnx",
    "litert_export": "tflite",
    "openvino_export": "openvino",
    "coreml_export": "coreml",
    "torchscript_export": "torchscript",
}

_STEPS = TypeAdapter(list[Step])


class Pipeline(BaseModel):
    """A validated, ordered list of steps that ends in one exported variant."""

    model_config = ConfigDict(frozen=True)

    steps: tuple[Step, ...]

    @property
    def export(self) -> _Step:
        """The pipeline's single export step."""
        return next(step for step in self.steps if step.kind == "export")

    @property
    def format(self) -> Format:
        """The format the pipeline's variant is written in."""
        return EXPORT_FORMATS[self.export.type]  # type: ignore[attr-defined]

    @property
    def precision(self) -> str:
        """The precision of the variant this pipeline produces (the last step that sets one wins)."""
        precision = "fp32"
        for step in self.steps:
            if step.type in ("int8_static", "int8_dynamic", "nncf_ptq", "litert_int8", "coreml_quantize"):
                precision = "int8"
            elif step.type == "fp16":
                precision = "fp16"
            elif step.type == "coreml_palettize":
                precision = "palettized"
            elif isinstance(step, CoreMLExportStep):
                precision = step.precision
            elif isinstance(step, OpenVINOExportStep) and step.compress_to_fp16:
                precision = "fp16"
        return precision

    def to_config(self) -> list[dict[str, Any]]:
        """The pipeline as plain config (the inverse of `parse_pipeline`)."""
        return [step.model_dump(exclude={"kind", "accepts"}) for step in self.steps]


def parse_pipeline(config: Sequence[dict[str, Any] | _Step] | Pipeline) -> Pipeline:
    """Validate ``config`` (a list of step dicts) into a `Pipeline` or raise `PipelineConfigError`."""
    if isinstance(config, Pipeline):
        return config
    raw = [step.model_dump(exclude={"kind", "accepts"}) if isinstance(step, _Step) else step for step in config]
    for item in raw:
        if isinstance(item, dict) and ("kind" in item or "accepts" in item):
            raise PipelineConfigError("step fields 'kind' and 'accepts' are fixed by the step type")
    try:
        steps = _STEPS.validate_python(raw)
    except ValidationError as exc:
        raise PipelineConfigError(f"invalid pipeline: {exc}") from exc
    exports = [step for step in steps if step.kind == "export"]
    if len(exports) != 1:
        raise PipelineConfigError(f"a pipeline needs exactly one export step, got {len(exports)}")
    export_at = steps.index(exports[0])
    for position, step in enumerate(steps):
        if step.kind == "source" and position > export_at:
            raise PipelineConfigError(f"source pass {step.type!r} must come before the export step")
        if step.kind == "artifact" and position < export_at:
            raise PipelineConfigError(f"pass {step.type!r} must come after the export step")
    fmt = EXPORT_FORMATS[exports[0].type]
    for step in steps:
        if step.kind == "artifact" and fmt not in step.accepts:
            raise PipelineConfigError(
                f"pass {step.type!r} works on {', '.join(step.accepts)} models, not {fmt} "
                f"(exported by {exports[0].type!r})"
            )
    return Pipeline(steps=tuple(steps))
