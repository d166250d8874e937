"""Export a PyTorch module to one self-contained ONNX file (no external data), atomically."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.errors import ConversionError, UnsupportedOperatorError
from converters.quiet import quiet_toolchains

if TYPE_CHECKING:
    import torch

__all__ = ["export_onnx", "unsupported_operator_in"]

# Patterns the torch exporters use to name an operator they cannot translate.
_UNSUPPORTED_PATTERNS = (
    re.compile(r"No ONNX function found for <OpOverload\(op='([\w.:]+)'"),
    re.compile(r"No ONNX function found for ([\w.:]+)"),
    re.compile(r"Unsupported FX nodes: \{'call_function': \['([\w.:]+)'"),
    re.compile(r"Exporting the operator '([\w.:]+)' to ONNX"),
    re.compile(r"(?:operator|op|Op) '?([\w]+::[\w.]+|aten\.[\w.]+)'? (?:is )?not supported"),
)


def unsupported_operator_in(exc: BaseException) -> str | None:
    """Return the operator an exporter error says it cannot translate, or ``None``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        for pattern in _UNSUPPORTED_PATTERNS:
            match = pattern.search(text)
            if match:
                return match.group(1)
        current = current.__cause__ or current.__context__
    return None


def _widen_batch(example_inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """torch.export specialises a size-1 dimension; export with batch 2 so batch stays symbolic."""
    import torch

    widened = []
    for value in example_inputs:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1:
            value = value.repeat(2, *([1] * (value.dim() - 1)))
        widened.append(value)
    return tuple(widened)


def _dynamic_axes(
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_batch: bool,
    extra: Mapping[str, Mapping[int, str]] | None,
) -> dict[str, dict[int, str]] | None:
    axes: dict[str, dict[int, str]] = {}
    if dynamic_batch:
        for name in (*input_names, *output_names):
            axes[name] = {0: "batch"}
    for name, dims in (extra or {}).items():
        axes.setdefault(name, {}).update(dict(dims))
    return axes or None


def _export_dynamo(
    module: Any,
    example_inputs: tuple[Any, ...],
    path: Path,
    opset: int,
    input_names: Sequence[str],
    output_names: Sequence[str],
    axes: dict[str, dict[int, str]] | None,
) -> None:
    import torch

    dims: dict[str, Any] = {}
    dynamic_shapes = None
    if axes:
        dynamic_shapes = tuple(
            {axis: dims.setdefault(label, torch.export.Dim(label)) for axis, label in axes.get(name, {}).items()}
            or None
            for name in input_names
        )
    torch.onnx.export(
        module,
        example_inputs,
        str(path),
        opset_version=opset,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_shapes=dynamic_shapes,
        dynamo=True,
        external_data=False,
        optimize=True,
        verbose=False,
    )


def _check_self_contained(path: Path, opset: int) -> None:
    """Refuse external data, drop per-node debug info (stack traces with local paths, which also
    inflate small models) and validate the graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ConversionError(f"exported ONNX file {path} references external data", stage="export")
    for graph in (model.graph, *(f for f in model.functions)):
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))


def _set_mode(module: Any, *, training: bool) -> None:
    """``module.train(training)``; ExportedPrograms and modules unlifted from one need none."""
    if hasattr(module, "train"):
        with contextlib.suppress(NotImplementedError):
            module.train(training)


def export_onnx(
    module: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: tuple[Any, ...],
    out: Path,
    *,
    opset: int = 18,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    dynamic_batch: bool = True,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    target: str = "onnx",
) -> Path:
    """Export ``module`` to a single self-contained ``.onnx`` file at ``out`` and return its path.

    An ``ExportedProgram`` is exported as it is, with its own dynamic dimensions.
    The batch dimension of every input and output is symbolic when ``dynamic_batch`` is true;
    ``dynamic_axes`` adds more symbolic dimensions (e.g. ``{"input_ids": {1: "seq"}}``). The file is
    written to a temporary name and renamed into place, so a failure leaves nothing at ``out``.

    Raises `UnsupportedOperatorError` when the exporter names an operator it cannot translate, and
    `ConversionError` for any other failure.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(input_names) != len(example_inputs):
        raise ConversionError(
            f"{len(example_inputs)} example inputs but {len(input_names)} input names",
            target=target,
            stage="export",
        )
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on installed extras
        raise ConversionError("ONNX export needs torch (pip install edgefleet[convert])") from exc

    if isinstance(module, torch.export.ExportedProgram):  # used as saved: its own dynamic dims
        axes, inputs = None, tuple(example_inputs)
    else:
        axes = _dynamic_axes(input_names, output_names, dynamic_batch, dynamic_axes)
        inputs = _widen_batch(tuple(example_inputs)) if dynamic_batch else tuple(example_inputs)
    was_training = getattr(module, "training", False)
    _set_mode(module, training=False)
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx.tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad(), quiet_toolchains():
            _export_dynamo(module, inputs, tmp, opset, input_names, output_names, axes)
        _check_self_contained(tmp, opset)
        tmp.replace(out)
    except ConversionError:
        raise
    except Exception as exc:
        operator = unsupported_operator_in(exc)
        if operator is not None:
            raise UnsupportedOperatorError(
                operator, target=target, stage="export", detail="torch.onnx has no translation"
            ) from exc
        raise ConversionError(
            f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            target=target,
            stage="export",
        ) from exc
    finally:
        _set_mode(module, training=was_training)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        for leftover in out.parent.glob(tmp.name + "*"):
            with contextlib.suppress(OSError):
                leftover.unlink()
    return out
