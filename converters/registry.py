"""The one registry of steps: each step type maps to the import path that implements it and the
Python modules it needs, so callers can refuse a missing extra before importing anything heavy."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from converters.errors import MissingExtraError, PipelineConfigError


@dataclass(frozen=True, slots=True)
class StepEntry:
    """Where a step type is implemented (``"module:attribute"``) and what it needs installed."""

    path: str
    requires: tuple[str, ...]
    extra: str = "convert"


STEPS: dict[str, StepEntry] = {
    # source passes
    "prune": StepEntry("converters.passes.prune:PrunePass", ("torch",)),
    "distill": StepEntry("converters.passes.distill:DistillPass", ("torch",)),
    # exporters
    "onnx_export": StepEntry("converters.exporters.onnx:OnnxExporter", ("torch", "onnx", "onnxscript")),
    "litert_export": StepEntry("converters.exporters.litert:LiteRTExporter", ("torch", "litert_torch")),
    "openvino_export": StepEntry("converters.exporters.openvino:OpenVINOExporter", ("torch", "openvino")),
    "coreml_export": StepEntry("converters.exporters.coreml:CoreMLExporter", ("torch", "coremltools")),
    "torchscript_export": StepEntry("converters.exporters.torchscript:TorchScriptExporter", ("torch",)),
    # artifact passes
    "graph_optimize": StepEntry("converters.passes.onnx_passes:GraphOptimizePass", ("onnx", "onnxruntime")),
    "transformer_optimize": StepEntry(
        "converters.passes.transformer_fusion:TransformerOptimizePass", ("onnx", "onnxruntime", "onnxscript")
    ),
    "fp16": StepEntry("converters.passes.onnx_passes:Fp16Pass", ("onnx", "onnxscript")),
    "int8_dynamic": StepEntry("converters.passes.ort_quant:Int8DynamicPass", ("onnx", "onnxruntime")),
    "int8_static": StepEntry("converters.passes.ort_quant:Int8StaticPass", ("onnx", "onnxruntime")),
    "nncf_ptq": StepEntry("converters.passes.nncf_ptq:NNCFPass", ("openvino", "nncf")),
    "litert_int8": StepEntry("converters.passes.litert_int8:LiteRTInt8Pass", ("litert_torch",)),
    "coreml_quantize": StepEntry("converters.passes.coreml_optimize:CoreMLQuantizePass", ("coremltools",)),
    "coreml_palettize": StepEntry("converters.passes.coreml_optimize:CoreMLPalettizePass", ("coremltools",)),
}

# Runtimes that execute variants on this host, and the module each needs.
RUNTIME_MODULES: dict[str, str] = {
    "onnxruntime": "onnxruntime",
    "litert": "ai_edge_litert",
    "openvino": "openvino",
    "coreml": "coremltools",
    "torchscript": "torch",
}


def module_available(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_available(step_type: str) -> None:
    """Raise `MissingExtraError` if a module ``step_type`` needs is not installed."""
    entry = _entry(step_type)
    for module in entry.requires:
        if not module_available(module):
            raise MissingExtraError(step_type, module, entry.extra)


def load_step(step_type: str) -> Any:
    """Import and return the class implementing ``step_type`` (after checking its modules)."""
    entry = _entry(step_type)
    check_available(step_type)
    module_name, _, attribute = entry.path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _entry(step_type: str) -> StepEntry:
    try:
        return STEPS[step_type]
    except KeyError:
        raise PipelineConfigError(f"unknown step type {step_type!r}; known: {', '.join(STEPS)}") from None
