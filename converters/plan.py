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
    table: dict[str, list[dict[str, Any]]]
    gpu = target.accelerator == "gpu"
    if target.runtime == "onnxruntime":
        table = {
            "fp32": [{"type": "onnx_export"}] + ([] if gpu else [{"type": "graph_optimize"}]),
            "fp16": [{"type": "onnx_export"}, {"type": "fp16"}],
            "int8": [{"type": "onnx_export"}, {"type": "int8_static", "calibration": "minmax"}],
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
        # one change at a time first (calibration, granularity, nodes kept in float), then pairs
        methods = [m for m in ("minmax", "entropy", "percentile") if m != base["calibration"]]
        variations += [{"calibration": m} for m in methods]
        variations += [
            {"per_channel": not base["per_channel"]},
            {"exclude_first_last": True},
            {"activation_matmuls": False},
        ]
        variations += [{"calibration": m, "exclude_first_last": True} for m in methods]
        variations += [{"exclude_first_last": True, "activation_matmuls": False}]
    elif base["type"] == "nncf_ptq":
        flipped = not base["transformer"]
        variations += [
            {"ignore_last_layer": True},
            {"transformer": flipped},
            {"preset": "mixed"},
            {"transformer": flipped, "ignore_last_layer": True},
            {"preset": "mixed", "ignore_last_layer": True},
        ]
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
