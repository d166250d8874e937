"""Planning: the variants to build per target and precision, and each one's default pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from converters import registry
from converters.errors import PipelineConfigError
from converters.pipeline import Pipeline, parse_pipeline
from targets import Target, get_target

ORT_INT8: dict[str, Any] = {"type": "int8_static", "calibration": "minmax"}
# a transformer is fused first (attention, skip LayerNorm, GELU), for fp32 and int8 alike, so the
# int8/fp32 ratio measures quantization and not fusion
ORT_FUSION: dict[str, Any] = {"type": "transformer_optimize"}
# then quantized dynamically: QAttention, int8 MatMuls and embeddings, activations quantized at run
# time (no QDQ pairs around softmax and layer norm, which at batch 1 eat the int8 gain)
ORT_TRANSFORMER_INT8: dict[str, Any] = {"type": "int8_dynamic", "per_channel": False}


@dataclass(frozen=True)
class VariantPlan:
    """A target, the precision to build for it and the pipeline that builds it; ``transformer`` (a
    model over token ids) widens the quantization search to the transformer schemes."""

    target: Target
    precision: str
    pipeline: Pipeline
    transformer: bool = False

    @property
    def name(self) -> str:
        return f"{self.target.name}/{self.precision}"


def plan_variants(
    targets: Sequence[str],
    *,
    precisions: Sequence[str] | None = None,
    pipelines: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    integer_inputs: bool = False,
) -> list[VariantPlan]:
    """The variants to build: each target's precisions (filtered by ``precisions``), with the default
    pipeline unless ``pipelines`` gives one for ``"target"`` or ``"target/precision"``. Every step's
    toolchain is checked before anything heavy is imported (`MissingExtraError`). ``integer_inputs``
    (token ids) marks the model as a transformer: its plans get the transformer int8 defaults and
    search space."""
    plans: list[VariantPlan] = []
    custom = dict(pipelines or {})
    for key in custom:
        if key.split("/")[0] not in targets:
            raise PipelineConfigError(f"pipeline given for {key!r}, which is not among the targets")
    for name in targets:
        target = get_target(name)
        if name in custom:  # one pipeline for the whole target builds one variant
            pipeline = parse_pipeline([dict(step) for step in custom[name]])
            plans.append(VariantPlan(target, pipeline.precision, pipeline, integer_inputs))
            continue
        wanted = [p for p in target.precisions if precisions is None or p in precisions]
        if not wanted:
            raise PipelineConfigError(f"{name} supports {', '.join(target.precisions)}; none requested")
        for precision in wanted:
            steps = custom.get(f"{name}/{precision}")
            if steps is not None:
                pipeline = parse_pipeline([dict(step) for step in steps])
                if pipeline.precision != precision:
                    raise PipelineConfigError(
                        f"pipeline for {name}/{precision} produces a {pipeline.precision} variant"
                    )
            else:
                pipeline = default_pipeline(target, precision, integer_inputs=integer_inputs)
            plans.append(VariantPlan(target, precision, pipeline, integer_inputs))
    for plan in plans:
        for step in plan.pipeline.steps:
            registry.check_available(step.type)
        runtime_module = registry.RUNTIME_MODULES.get(plan.target.runtime)
        if runtime_module and plan.target.runtime != "coreml" and not registry.module_available(runtime_module):
            raise registry.MissingExtraError(f"{plan.target.runtime} runtime", runtime_module)
    return plans


def default_pipeline(target: Target, precision: str, *, integer_inputs: bool = False) -> Pipeline:
    """The pipeline that builds ``target``'s ``precision`` variant.

    ``integer_inputs`` (token ids) selects the transformer scheme where one exists: ONNX Runtime's
    transformer fusions (fp32 and int8) then dynamic int8 (QAttention), NNCF's transformer scheme.
    """
    steps: list[dict[str, Any]] | None = None
    table: dict[str, list[dict[str, Any]]]
    gpu = target.accelerator == "gpu"
    if target.runtime == "onnxruntime":
        fusion = [ORT_FUSION] if integer_inputs and not gpu else []
        table = {
            "fp32": [{"type": "onnx_export"}, *fusion] + ([] if gpu else [{"type": "graph_optimize"}]),
            "fp16": [{"type": "onnx_export"}, {"type": "fp16"}],
            "int8": [{"type": "onnx_export"}, *fusion, ORT_TRANSFORMER_INT8 if integer_inputs else ORT_INT8],
        }
        steps = table.get(precision)
    elif target.runtime == "litert":
        table = {
            "fp32": [{"type": "litert_export"}],
            "int8": [{"type": "litert_export"}, {"type": "litert_int8", "int8_io": target.int8_io}],
        }
        steps = table.get(precision)
    elif target.runtime == "openvino":
        table = {
            "fp32": [{"type": "openvino_export", "compress_to_fp16": False}],
            "fp16": [{"type": "openvino_export", "compress_to_fp16": True}],
            "int8": [{"type": "openvino_export"}, {"type": "nncf_ptq", "transformer": integer_inputs}],
        }
        steps = table.get(precision)
    elif target.runtime == "coreml":
        table = {
            "fp32": [{"type": "coreml_export", "precision": "fp32"}],
            "fp16": [{"type": "coreml_export", "precision": "fp16"}],
            "int8": [{"type": "coreml_export"}, {"type": "coreml_quantize"}],
            "palettized": [{"type": "coreml_export"}, {"type": "coreml_palettize", "nbits": 6}],
        }
        steps = table.get(precision)
    elif target.runtime == "torchscript":
        steps = {"fp32": [{"type": "torchscript_export"}]}.get(precision)
    if steps is None:
        raise PipelineConfigError(f"no default pipeline for {target.name} ({target.runtime}) at {precision}")
    return parse_pipeline(steps)
