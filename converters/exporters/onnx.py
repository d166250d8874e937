"""ONNX exporter: torch.onnx (dynamo) at a pinned opset; ONNX sources are copied as they are."""

from __future__ import annotations

import shutil
from pathlib import Path

from converters.exporters._torch import io_meta, wrapped
from converters.onnx_export import export_onnx
from converters.pipeline import OnnxExportStep
from converters.source import SourceModel
from converters.types import Artifact, StepContext
from targets import Target


class OnnxExporter:
    """``onnx_export``: one self-contained ``model.onnx`` with a symbolic batch."""

    def __init__(self, config: OnnxExportStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def export(self, model: SourceModel, target: Target, out: Path) -> Artifact:
        path = out / "model.onnx"
        if model.kind == "onnx":
            assert model.path is not None
            shutil.copyfile(model.path, path)
        elif model.kind == "torchscript":
            with wrapped(model, target.name, "export"):
                _export_torchscript(model, path, self.config.opset)
        else:
            export_onnx(
                model.program if model.program is not None else model.module,
                model.torch_examples(),
                path,
                opset=self.config.opset,
                input_names=model.input_names,
                output_names=model.output_names,
                dynamic_batch=model.batch_dynamic,
                dynamic_axes=model.dynamic_axes,
                target=target.name,
            )
        return Artifact(out, path.name, "onnx", "fp32", (path.name,), io_meta(model, opset=self.config.opset))


def _export_torchscript(model: SourceModel, path: Path, opset: int) -> None:
    """TorchScript modules go through the TorchScript-based exporter (dynamo cannot trace them)."""
    import torch

    from converters.quiet import quiet_toolchains

    axes = {name: {0: "batch", **dict(model.dynamic_axes.get(name, {}))} for name in model.input_names}
    axes.update({name: {0: "batch"} for name in model.output_names})
    with torch.no_grad(), quiet_toolchains():
        torch.onnx.export(
            model.module,
            model.torch_examples(),
            str(path),
            opset_version=opset,
            input_names=list(model.input_names),
            output_names=list(model.output_names),
            dynamic_axes=axes,
            dynamo=False,
        )
