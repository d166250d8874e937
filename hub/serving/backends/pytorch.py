"""Torch backends: TorchScript (``torch.jit.load``) and ExportedProgram (``torch.export.load``).

On a GPU float models run in fp16 (``ModelSpec.fp16``); tensors cross the API as fp32 either way.
Inputs and outputs follow Triton's libtorch naming, ``INPUT__0``/``OUTPUT__0``, unless declared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hub.serving.config import ModelSpec, TensorSpec
from hub.serving.errors import BackendError
from hub.serving.tensors import v2_datatype


class _TorchBackend:
    platform = "pytorch_libtorch"

    def __init__(self, spec: ModelSpec, module: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]):
        import torch

        self._torch = torch
        if spec.device == "cuda" and not torch.cuda.is_available():
            raise BackendError("device 'cuda' asked for but torch sees no GPU")
        self.device = "cuda" if spec.device != "cpu" and torch.cuda.is_available() else "cpu"
        self._half = self.device == "cuda" and spec.fp16
        module = module.to(self.device)
        if self._half:
            module = module.half()
        self._module = module.eval() if isinstance(module, torch.jit.ScriptModule) else module
        self.inputs = tuple(spec.inputs or inputs)
        self.outputs = tuple(spec.outputs or outputs)

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the module with inputs in declared order; outputs as fp32/natural numpy arrays."""
        torch = self._torch
        with torch.inference_mode():
            args = [self._tensor(inputs[s.name]) for s in self.inputs]
            result = self._module(*args)
        values = list(result) if isinstance(result, tuple | list) else [result]
        if len(values) != len(self.outputs):
            raise BackendError(f"model returned {len(values)} outputs, {len(self.outputs)} declared")
        return {s.name: self._array(v) for s, v in zip(self.outputs, values, strict=True)}

    def close(self) -> None:
        """Drop the module (and the GPU cache it used)."""
        self._module = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()

    def _tensor(self, arr: np.ndarray) -> Any:
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.array(arr, copy=True, order="C")
        t = self._torch.from_numpy(arr)
        if self.device == "cuda":
            t = t.to(self.device, non_blocking=True)
        if self._half and t.is_floating_point():
            t = t.half()
        return t

    def _array(self, value: Any) -> np.ndarray:
        t = value.detach()
        if t.dtype == self._torch.float16 and self._half:
            t = t.float()
        return np.asarray(t.cpu().numpy())


def _default_specs(prefix: str, count: int) -> list[TensorSpec]:
    return [TensorSpec(name=f"{prefix}__{i}", datatype="FP32", shape=None) for i in range(count)]


class TorchScriptBackend(_TorchBackend):
    """A TorchScript module; declare ``inputs``/``outputs`` in the spec for exact metadata."""

    def __init__(self, spec: ModelSpec) -> None:
        import torch

        module = torch.jit.load(str(spec.path), map_location="cpu")
        arity = max(len(module.forward.schema.arguments) - 1, 1)  # minus self
        super().__init__(spec, module, _default_specs("INPUT", arity), _default_specs("OUTPUT", 1))


class ExportedProgramBackend(_TorchBackend):
    """A ``torch.export`` ExportedProgram (.pt2); tensor specs are read from the graph."""

    platform = "pytorch_export"

    def __init__(self, spec: ModelSpec) -> None:
        import torch
        from torch.export.graph_signature import InputKind, OutputKind

        program = torch.export.load(str(spec.path))
        sig = program.graph_signature
        nodes = {n.name: n for n in program.graph.nodes}
        ins = [s.arg.name for s in sig.input_specs if s.kind == InputKind.USER_INPUT]
        outs = [s.arg.name for s in sig.output_specs if s.kind == OutputKind.USER_OUTPUT]
        inputs = [_node_spec(nodes.get(n), f"INPUT__{i}") for i, n in enumerate(ins)]
        outputs = [_node_spec(nodes.get(n), f"OUTPUT__{i}") for i, n in enumerate(outs)]
        super().__init__(spec, program.module(), inputs, outputs)


def _node_spec(node: Any, name: str) -> TensorSpec:
    val = getattr(node, "meta", {}).get("val") if node is not None else None
    if val is None or not hasattr(val, "shape"):
        return TensorSpec(name=name, datatype="FP32", shape=None)
    import torch

    try:
        datatype = v2_datatype(torch.empty(0, dtype=val.dtype).numpy().dtype)
    except (TypeError, RuntimeError):
        datatype = "FP32"
    shape = tuple(d if isinstance(d, int) else -1 for d in val.shape)
    return TensorSpec(name=name, datatype=datatype, shape=shape)
