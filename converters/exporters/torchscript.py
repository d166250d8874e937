"""TorchScript exporter (``model.pt``) by tracing or scripting the source module."""

from __future__ import annotations

import shutil
from pathlib import Path

from converters.exporters._torch import io_meta, require_module, wrapped
from converters.pipeline import TorchScriptExportStep
from converters.quiet import quiet_toolchains
from converters.source import SourceModel
from converters.types import Artifact, StepContext
from targets import Target


class TorchScriptExporter:
    """``torchscript_export``: a ``model.pt`` for libtorch."""

    def __init__(self, config: TorchScriptExportStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def export(self, model: SourceModel, target: Target, out: Path) -> Artifact:
        module = require_module(model, target.name, "export")
        path = out / "model.pt"
        if model.kind == "torchscript" and model.path is not None:
            shutil.copyfile(model.path, path)
        else:
            with wrapped(model, target.name, "export"), quiet_toolchains():
                import torch

                with torch.no_grad():
                    if self.config.method == "script":
                        scripted = torch.jit.script(module)
                    else:
                        scripted = torch.jit.trace(module, model.torch_examples(), check_trace=False)
                scripted = torch.jit.freeze(scripted.eval()) if self.config.method == "trace" else scripted
                torch.jit.save(scripted, str(path))
        return Artifact(out, path.name, "torchscript", "fp32", (path.name,), io_meta(model))
