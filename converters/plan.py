"""Default pipelines per target and precision, and the quantization search spaces."""

from __future__ import annotations

from typing import Any

from converters.errors import PipelineConfigError
from converters.pipeline import Pipeline, parse_pipeline
from targets import Target

QUANT_STEPS = ("int8_static", "nncf_ptq", "litert_int8")


def default_pipeline(target: Target, precision: str, *, integer_inputs: bool = False) -> Pipeline:
    """The pipeline that builds ``target``'s ``precision`` variant.

    ``integer_inputs`` (token ids) selects the transformer quantization scheme where one exists.
    """
    steps: list[dict[str, Any]] | None = None
    gpu = target.accelerator == "gpu"
    if target.runtime == "onnxruntime":
        steps = {
            "fp32": [{"type": "onnx_export"}] + ([] if gpu else [{"type": "graph_optimize"}]),
            "fp16": [{"type": "onnx_export"}, {"type": "fp16"}],
            "int8": [{"type": "onnx_export"}, {"type": "int8_static", "calibration": "minmax"}],
        }.get(precision)
    elif target.runtime == "litert":
        steps = {
            "fp32": [{"type": "litert_export"}],
            "int8": [{"type": "litert_export"}, {"type": "litert_int8", "int8_io": target.int8_io}],
        }.get(precision)
    elif target.runtime == "openvino":
        steps = {
            "fp32": [{"type": "openvino_export", "compress_to_fp16": False}],
            "fp16": [{"type": "openvino_export", "compress_to_fp16": True}],
            "int8": [{"type": "openvino_export"}, {"type": "nncf_ptq", "transformer": integer_inputs}],
        }.get(precision)
    elif target.runtime == "coreml":
        steps = {
            "fp32": [{"type": "coreml_export", "precision": "fp32"}],
            "fp16": [{"type": "coreml_export", "precision": "fp16"}],
            "int8": [{"type": "coreml_export"}, {"type": "coreml_quantize"}],
            "palettized": [{"type": "coreml_export"}, {"type": "coreml_palettize", "nbits": 6}],
        }.get(precision)
    elif target.runtime == "torchscript":
        steps = {"fp32": [{"type": "torchscript_export"}]}.get(precision)
    if steps is None:
        raise PipelineConfigError(f"no default pipeline for {target.name} ({target.runtime}) at {precision}")
    return parse_pipeline(steps)


def search_space(pipeline: Pipeline, max_trials: int) -> list[Pipeline]:
    """Variants of ``pipeline``'s quantization step to try under an accuracy budget, the given one
    first: calibration method, per-channel, and nodes kept in float."""
    config = pipeline.to_config()
    index = next((i for i, step in enumerate(config) if step["type"] in QUANT_STEPS), None)
    if index is None:
        return [pipeline]
    base = config[index]
    variations: list[dict[str, Any]] = []
    if base["type"] == "int8_static":
        for exclude in (False, True):
            for per_channel in (True, False):
                for method in ("minmax", "entropy", "percentile"):
                    variations.append(
                        {"calibration": method, "per_channel": per_channel, "exclude_first_last": exclude}
                    )
    elif base["type"] == "nncf_ptq":
        for ignore in (False, True):
            for preset in ("performance", "mixed"):
                variations.append({"preset": preset, "ignore_last_layer": ignore})
    else:
        variations = [{"per_channel": True}, {"per_channel": False}]
    candidates = [pipeline]
    seen = {_signature(pipeline)}
    for change in variations:
        steps = [dict(step) for step in config]
        steps[index] = {**base, **change}
        candidate = parse_pipeline(steps)
        if _signature(candidate) not in seen:
            seen.add(_signature(candidate))
            candidates.append(candidate)
    return candidates[:max_trials]


def _signature(pipeline: Pipeline) -> str:
    import json

    return json.dumps(pipeline.to_config(), sort_keys=True, default=list)
