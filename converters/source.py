"""The source model: a PyTorch module (from Python, ``.pt2`` or TorchScript) or an ONNX file."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from converters.data import Dataset
from converters.errors import InvalidSourceError

SourceKind = Literal["torch", "exported", "torchscript", "onnx"]
SOURCE_SUFFIXES = {
    ".pt2": "exported",
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".jit": "torchscript",
}


@dataclass(frozen=True, eq=False)
class SourceModel:
    """A model to convert, its example inputs (numpy, batch first) and input/output names.

    ``module`` is the PyTorch module for torch sources (``None`` for ONNX); ``path`` the file it came
    from, if any. ``dynamic_axes`` names symbolic dimensions per input (the batch is always one).
    ``program`` is the ``ExportedProgram`` of a ``.pt2`` source, used as saved (its own dynamic
    dimensions and range constraints) by every exporter that takes one.
    """

    name: str
    kind: SourceKind
    examples: Mapping[str, np.ndarray]
    output_names: tuple[str, ...] = ("output",)
    module: Any = None
    path: Path | None = None
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    digest: str = ""
    history: tuple[str, ...] = ()
    batch_dynamic: bool = True
    program: Any = None
    notes: Mapping[str, Any] = field(default_factory=dict)  # what source passes did, for the report

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.examples)

    def torch_examples(self) -> tuple[Any, ...]:
        """The example inputs as torch tensors, in input order."""
        import torch

        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in self.examples.values())

    def derived(self, module: Any, step_digest: str, label: str) -> SourceModel:
        """A new source after a source pass replaced the module."""
        return replace(
            self, module=module, kind="torch", digest=step_digest, history=(*self.history, label), program=None
        )

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """The source model's primary output on ``batch`` (the reference every variant is checked against)."""
        if self.kind == "onnx":
            return _onnx_session(self)(batch)
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(batch[n])) for n in self.input_names]
        with torch.no_grad():
            output = self.module(*tensors)
        return _primary(output)

    def reference(self, data: Dataset, batch_size: int = 64) -> np.ndarray:
        """Source outputs for every sample of ``data``."""
        batch_size = batch_size if self.batch_dynamic else 1
        try:
            return np.concatenate([self.run(batch) for batch in data.batches(batch_size)])
        except Exception as exc:
            raise InvalidSourceError(f"the source model failed on the data: {exc}") from exc


def _primary(output: Any) -> np.ndarray:
    while isinstance(output, (tuple, list)):
        output = output[0]
    if isinstance(output, Mapping):
        output = next(iter(output.values()))
    return np.asarray(output.detach().cpu().numpy() if hasattr(output, "detach") else output)


_SESSIONS: dict[int, Any] = {}


def _onnx_session(source: SourceModel) -> Any:
    key = id(source)
    if key not in _SESSIONS:
        import onnxruntime as ort

        session = ort.InferenceSession(str(source.path), providers=["CPUExecutionProvider"])
        _SESSIONS.clear()
        _SESSIONS[key] = lambda batch: session.run(None, {k: batch[k] for k in source.input_names})[0]
    return _SESSIONS[key]


def module_digest(module: Any) -> str:
    """sha256 over a module's class, structure and weights."""
    sha = hashlib.sha256()
    sha.update(f"{type(module).__module__}.{type(module).__qualname__}\n{module}".encode())
    for name, tensor in module.state_dict().items():
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _as_numpy(values: Sequence[Any]) -> list[np.ndarray]:
    return [np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for v in values]


def from_module(
    module: Any,
    example_inputs: tuple[Any, ...],
    *,
    name: str = "model",
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] = ("output",),
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> SourceModel:
    """A source from an ``nn.Module`` and example inputs (tensors or arrays, batch first)."""
    arrays = _as_numpy(example_inputs)
    names = tuple(input_names or (["input"] if len(arrays) == 1 else [f"input_{i}" for i in range(len(arrays))]))
    if len(names) != len(arrays):
        raise InvalidSourceError(f"{len(arrays)} example inputs but {len(names)} input names")
    module.eval()
    return SourceModel(
        name=name,
        kind="torch",
        examples=dict(zip(names, arrays, strict=True)),
        output_names=tuple(output_names),
        module=module,
        dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items()},
        digest=module_digest(module),
    )


def load_source(path: Path, *, examples: Dataset | None = None) -> SourceModel:
    """Load a ``.pt2`` ExportedProgram, a TorchScript file or an ONNX file.

    Example inputs come from the ExportedProgram itself, else the first sample of ``examples``
    (the calibration or evaluation data), else the ONNX input shapes (symbolic sizes set to 1).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidSourceError(f"source model {path} does not exist")
    kind = SOURCE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InvalidSourceError(f"{path}: unknown model format; expected one of {', '.join(SOURCE_SUFFIXES)}")
    try:
        if kind == "exported":
            return _load_exported(path, examples)
        if kind == "torchscript":
            return _load_torchscript(path, examples)
        return _load_onnx(path, examples)
    except InvalidSourceError:
        raise
    except Exception as exc:
        raise InvalidSourceError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc


def _first_sample(examples: Dataset | None, names: Sequence[str], path: Path) -> dict[str, np.ndarray]:
    if examples is None:
        raise InvalidSourceError(f"{path}: pass --calib or --eval data so example inputs are known")
    sample = examples.sample(0)
    if len(sample) != len(names):
        raise InvalidSourceError(f"{path} takes inputs {list(names)}, data has {sorted(sample)}")
    return dict(zip(names, sample.values(), strict=True))


def _load_exported(path: Path, examples: Dataset | None) -> SourceModel:
    import torch

    program = torch.export.load(str(path))
    placeholders = [
        spec.arg.name
        for spec in program.graph_signature.input_specs
        if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT
    ]
    nodes = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    axes: dict[str, dict[int, str]] = {}
    batch_dynamic = True
    for name in placeholders:
        value = nodes[name].meta.get("val")
        for axis, size in enumerate(getattr(value, "shape", ())):
            if axis > 0 and isinstance(size, torch.SymInt):
                axes.setdefault(name, {})[axis] = f"dim{axis}_{name}"
            if axis == 0 and not isinstance(size, torch.SymInt):
                batch_dynamic = False
    if examples is not None:
        example = _first_sample(examples, placeholders, path)
    elif program.example_inputs:
        args = program.example_inputs[0]
        example = dict(zip(placeholders, _as_numpy(args), strict=True))
    else:
        raise InvalidSourceError(f"{path} carries no example inputs; pass --calib or --eval data")
    return SourceModel(
        name=path.stem,
        kind="exported",
        examples=example,
        module=program.module(),
        path=path,
        dynamic_axes=axes,
        digest=file_digest(path),
        batch_dynamic=batch_dynamic,
        program=program,
    )


def _load_torchscript(path: Path, examples: Dataset | None) -> SourceModel:
    import torch

    module = torch.jit.load(str(path), map_location="cpu").eval()
    arguments = [a.name for a in module.forward.schema.arguments][1:]
    example = _first_sample(examples, arguments, path)
    return SourceModel(
        name=path.stem,
        kind="torchscript",
        examples=example,
        module=module,
        path=path,
        digest=file_digest(path),
    )


def _load_onnx(path: Path, examples: Dataset | None) -> SourceModel:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    names = [i.name for i in graph_inputs]
    axes: dict[str, dict[int, str]] = {}
    for item in graph_inputs:
        for axis, dim in enumerate(item.type.tensor_type.shape.dim):
            if axis > 0 and dim.dim_param:
                axes.setdefault(item.name, {})[axis] = dim.dim_param
    if examples is not None:
        example = _first_sample(examples, names, path)
    else:
        example = {}
        for item in graph_inputs:
            tensor_type = item.type.tensor_type
            shape = [d.dim_value if d.dim_value > 0 else 1 for d in tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
            example[item.name] = np.zeros(shape, dtype=dtype)
    outputs = tuple(o.name for o in model.graph.output)
    return SourceModel(
        name=path.stem,
        kind="onnx",
        examples=example,
        output_names=outputs,
        path=path,
        dynamic_axes=axes,
        digest=file_digest(path),
    )
