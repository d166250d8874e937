"""TorchScript exporter (``model.pt``) by tracing or scripting the source module."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from converters.exporters._torch import io_meta, require_module, wrapped
from converters.pipeline import TorchScriptExportStep
from converters.quiet import quiet_toolchains
from converters.source import SourceModel
from converters.types import Artifact, StepContext
from targets import Target


def trace(model: SourceModel, module: Any, *, batch_one: bool = False) -> Any:
    """A frozen TorchScript trace of ``module``. A module unlifted from a ``.pt2`` reads sizes through
    ``sym_size`` ops the tracer records as constants, so it is traced at batch 1 with static shapes."""
    import torch

    examples = model.torch_examples()
    if batch_one or model.program is not None:
        examples = tuple(t[:1] for t in examples)
    with torch.no_grad():
        traced = torch.jit.trace(module, examples, check_trace=False)
    return torch.jit.freeze(traced.eval())


class TorchScriptExporter:
    """``torchscript_export``: a ``model.pt`` for libtorch."""

    def __init__(self, config: TorchScriptExportStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def export(self, model: SourceModel, target: Target, out: Path) -> Artifact:
        module = require_module(model, target.name, "export")
        path = out / "model.pt"
        static = model.program is not None and self.config.method == "trace"
        if model.kind == "torchscript" and model.path is not None:
            shutil.copyfile(model.path, path)
        else:
            with wrapped(model, target.name, "export"), quiet_toolchains():
                import torch

                if self.config.method == "script":
                    with torch.no_grad():
                        scripted = torch.jit.script(module)
                else:
                    scripted = trace(model, module)
                torch.jit.save(scripted, str(path))
        meta = io_meta(model)
        if static:
            meta.update(batch_dynamic=False, static_shapes={k: [1, *v.shape[1:]] for k, v in model.examples.items()})
        return Artifact(out, path.name, "torchscript", "fp32", (path.name,), meta)
