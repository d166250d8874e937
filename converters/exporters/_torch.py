"""Shared PyTorch helpers for exporters: torch.export with symbolic dims, error translation."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any

from converters.errors import ConversionError, InvalidSourceError, UnsupportedOperatorError
from converters.onnx_export import unsupported_operator_in
from converters.source import SourceModel

_OPS: dict[str, tuple[str, ...]] = {}


def require_module(source: SourceModel, target: str, stage: str) -> Any:
    """The source's PyTorch module, or a `ConversionError` for ONNX sources."""
    if source.module is None:
        raise ConversionError(
            f"stage {stage!r} needs a PyTorch source model; {source.name} is {source.kind}",
            target=target,
            stage=stage,
        )
    return source.module


def export_program(source: SourceModel, *, dynamic: bool = True, batch_one: bool = False) -> Any:
    """``torch.export`` the source module; symbolic batch (and named axes) when ``dynamic``.

    A ``.pt2`` source's own program is returned as saved when ``dynamic`` (re-exporting it with other
    dimension bounds violates its range constraints); static exports stay within its bounds."""
    import torch

    if dynamic and not batch_one and source.program is not None:
        return source.program
    from converters.onnx_export import _widen_batch

    examples = source.torch_examples()
    if batch_one:
        examples = tuple(t[:1] for t in examples)
    shapes = None
    if dynamic:
        batch = {0: "batch"} if source.batch_dynamic else {}
        if source.batch_dynamic:
            examples = _widen_batch(examples)
        dims: dict[str, Any] = {}
        shapes = tuple(
            {
                axis: dims.setdefault(label, torch.export.Dim(label))
                for axis, label in {**batch, **dict(source.dynamic_axes.get(name, {}))}.items()
            }
            or None
            for name in source.input_names
        )
    module = source.module
    return torch.export.export(module, examples, dynamic_shapes=shapes)


def source_operators(source: SourceModel) -> tuple[str, ...]:
    """Operator names in the source graph (``ns.op.overload``), for naming an unsupported one."""
    if source.digest in _OPS:
        return _OPS[source.digest]
    ops: tuple[str, ...] = ()
    if source.module is not None and source.kind != "torchscript":
        with contextlib.suppress(Exception):
            program = export_program(source, dynamic=False)
            ops = tuple(dict.fromkeys(str(n.target) for n in program.graph.nodes if n.op == "call_function"))
    _OPS[source.digest] = ops
    return ops


def _mentioned(text: str, ops: tuple[str, ...]) -> str | None:
    """The first non-aten source operator the text names (as ``ns.op`` or ``ns::op``), else any."""
    found = []
    for op in ops:
        namespace, _, rest = op.partition(".")
        base = rest.split(".")[0]
        patterns = (rf"\b{re.escape(namespace)}(\.|::){re.escape(base)}\b",)
        if any(re.search(p, text) for p in patterns):
            found.append(op)
    custom = [op for op in found if not op.startswith(("aten.", "prims.", "_operator", "<"))]
    ranked = custom or found
    return ranked[0] if ranked else None


def translate(exc: BaseException, *, source: SourceModel, target: str, stage: str) -> ConversionError:
    """Turn a toolchain exception into ours, naming the operator when the message allows."""
    if isinstance(exc, ConversionError):
        return exc
    texts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(texts) < 8:
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    text = "\n".join(texts)
    operator = _mentioned(text, source_operators(source)) or unsupported_operator_in(exc)
    if operator is not None and re.search(
        r"(?i)not (be )?(supported|implemented|found)|unsupported|no "
        r"(lowering|conversion|translation|onnx function)|lowering",
        text,
    ):
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return UnsupportedOperatorError(operator, target=target, stage=stage, detail=first)
    first_line = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    return ConversionError(
        f"{stage} failed for {target}: {type(exc).__name__}: {first_line}", target=target, stage=stage
    )


@contextlib.contextmanager
def wrapped(source: SourceModel, target: str, stage: str) -> Iterator[None]:
    """Re-raise any foreign exception inside the block as a `ConversionError` ``from`` it."""
    try:
        yield
    except (ConversionError, InvalidSourceError):
        raise
    except Exception as exc:
        raise translate(exc, source=source, target=target, stage=stage) from exc


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Send native (C++) stderr chatter to a buffer for the block; its text is kept in the list."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            saved = os.dup(2)
        except OSError:
            yield lines
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines()[-50:])


def io_meta(source: SourceModel, **extra: Any) -> dict[str, Any]:
    """Artifact metadata describing the model's inputs and outputs."""
    meta: dict[str, Any] = {
        "batch_dynamic": source.batch_dynamic,
        "input_names": list(source.input_names),
        "input_dtypes": [str(a.dtype) for a in source.examples.values()],
        "output_names": list(source.output_names),
        **dict(source.notes),
    }
    meta.update(extra)
    return meta
