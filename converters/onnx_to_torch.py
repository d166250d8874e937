"""ONNX sources for PyTorch-only exporters (LiteRT, TorchScript, Core ML) and source passes: the ONNX
graph is rebuilt as a ``torch.fx`` module with onnx2torch, then checked like every variant."""

from __future__ import annotations

import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

from converters.cache import digest, distribution_version
from converters.errors import ConversionError, MissingExtraError
from converters.registry import module_available
from converters.source import SourceModel


def needs_torch(step_type: str) -> bool:
    """Whether a step needs a PyTorch module (ONNX Runtime and OpenVINO read ONNX files directly)."""
    return step_type not in ("onnx_export", "openvino_export")


def torch_source(source: SourceModel, *, target: str) -> SourceModel:
    """``source`` as a PyTorch module: itself for torch sources, onnx2torch's conversion for ONNX."""
    if source.kind != "onnx":
        return source
    if not module_available("onnx2torch"):
        raise MissingExtraError(f"converting ONNX for {target}", "onnx2torch")
    try:
        module = _static_reshapes(_onnx2torch().convert(_prepared(source)).eval())
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ConversionError(
            f"onnx2torch cannot rebuild {source.name} in PyTorch for {target}: {first}",
            target=target,
            stage="onnx2torch",
        ) from exc
    key = digest("onnx2torch", source.digest, distribution_version("onnx2torch"))
    history = (*source.history, "onnx2torch")
    return replace(source, module=module, kind="torch", digest=key, history=history, batch_dynamic=False)


def _prepared(source: SourceModel) -> Any:
    """The ONNX model at the example's shapes (batch 1) with constants folded by ONNX Runtime, so
    shape computations become constants, and ``Reshape(allowzero=1)`` relaxed where that is exact."""
    import tempfile

    import onnx
    import onnxruntime as ort

    model = onnx.load(str(source.path))
    for item in model.graph.input:
        if item.name in source.examples:
            dims = item.type.tensor_type.shape.dim
            for dim, size in zip(dims, (1, *source.examples[item.name].shape[1:]), strict=False):
                dim.Clear()
                dim.dim_value = int(size)
    with tempfile.TemporaryDirectory() as scratch:
        static, folded = Path(scratch) / "static.onnx", Path(scratch) / "folded.onnx"
        onnx.save(model, str(static))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 3
        ort.InferenceSession(str(static), options, providers=["CPUExecutionProvider"])
        return _without_allowzero(folded)


def _static_reshapes(module: Any) -> Any:
    """Replace onnx2torch reshapes whose target shape is a constant by plain ``reshape`` calls, so
    ``torch.export`` sees no data-dependent shape."""
    import torch

    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_module" or type(module.get_submodule(node.target)).__name__ != "OnnxReshape":
            continue
        shape_node = node.args[1]
        if getattr(shape_node, "op", None) != "get_attr":
            continue
        shape = [int(v) for v in _attr(module, shape_node.target).tolist()]
        with graph.inserting_before(node):
            sizes = [graph.call_method("size", (node.args[0], i)) if v == 0 else v for i, v in enumerate(shape)]
            replacement = graph.call_function(torch.reshape, (node.args[0], tuple(sizes)))
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    module.recompile()
    return module


def _attr(module: Any, target: str) -> Any:
    value = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _without_allowzero(path: Path) -> Any:
    """The ONNX model with ``Reshape(allowzero=1)`` relaxed to 0 (torch.onnx emits 1; onnx2torch
    implements 0 only). They differ only for a 0 in the target shape, so constant shapes holding a 0
    keep the flag (and onnx2torch then names the node it cannot convert)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attribute.t)
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        shape = constants.get(node.input[1]) if len(node.input) > 1 else None
        if shape is not None and (shape == 0).any():
            continue
        for attribute in node.attribute:
            if attribute.name == "allowzero":
                attribute.i = 0
    return model


def _onnx2torch() -> Any:
    """Import onnx2torch. It imports torchvision for NonMaxSuppression and RoiAlign only; where
    torchvision is not installed (its wheels for this CPU-only torch pin pull a CUDA torch), those two
    ops are left unavailable instead of failing the import. The placeholder is removed afterwards."""
    if "onnx2torch" in sys.modules or module_available("torchvision"):
        import onnx2torch

        return onnx2torch
    placeholder = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")

    def unavailable(*_: Any, **__: Any) -> Any:
        raise ConversionError("this ONNX operator needs torchvision, which is not installed")

    ops.nms = ops.roi_align = ops.box_convert = unavailable  # type: ignore[attr-defined]
    placeholder.ops = ops  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": placeholder, "torchvision.ops": ops})
    try:
        import onnx2torch
    finally:
        for name in ("torchvision", "torchvision.ops"):
            sys.modules.pop(name, None)
    return onnx2torch
