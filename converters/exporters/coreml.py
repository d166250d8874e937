"""Core ML exporter (mlprogram ``.mlpackage``) through coremltools.

coremltools converts on Linux but cannot execute models there; variants are checked on macOS only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.exporters._torch import captured_stderr, export_program, io_meta, require_module, wrapped
from converters.exporters.torchscript import trace
from converters.pipeline import CoreMLExportStep
from converters.quiet import quiet_toolchains
from converters.source import SourceModel
from converters.types import Artifact, StepContext
from targets import Target


class CoreMLExporter:
    """``coreml_export``: an mlprogram with fp16 (default) or fp32 compute precision."""

    def __init__(self, config: CoreMLExportStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def export(self, model: SourceModel, target: Target, out: Path) -> Artifact:
        module = require_module(model, target.name, "export")
        path = out / "model.mlpackage"
        path_taken = "torchscript" if model.kind == "torchscript" else "torch.export"
        with wrapped(model, target.name, "export"), quiet_toolchains(), captured_stderr():
            import coremltools as ct

            precision = ct.precision.FLOAT16 if self.config.precision == "fp16" else ct.precision.FLOAT32
            deployment = getattr(ct.target, self.config.minimum_deployment_target)
            kwargs = {
                "convert_to": "mlprogram",
                "compute_precision": precision,
                "minimum_deployment_target": deployment,
                "skip_model_load": True,
            }
            if model.kind == "torchscript":
                mlmodel = ct.convert(module, inputs=_tensor_types(model), **kwargs)
            else:
                try:
                    program = export_program(model, dynamic=False, batch_one=True).run_decompositions({})
                    mlmodel = ct.convert(program, **kwargs)
                except Exception as first:  # e.g. an fx node coremltools cannot lower: try TorchScript
                    try:
                        traced = trace(model, module, batch_one=True)
                        mlmodel = ct.convert(traced, inputs=_tensor_types(model), **kwargs)
                    except Exception:
                        raise first from None
                    path_taken = "torchscript"
            mlmodel.save(str(path))
        files = tuple(str(p.relative_to(out)) for p in sorted(path.rglob("*")) if p.is_file())
        meta = io_meta(
            model,
            deployment_target=self.config.minimum_deployment_target,
            compute_precision=self.config.precision,
            coreml_frontend=path_taken,
        )
        return Artifact(out, path.name, "coreml", self.config.precision, files, meta)


def _tensor_types(model: SourceModel) -> list[Any]:
    """coremltools input types for a TorchScript module: batch 1, the example's other dimensions."""
    import coremltools as ct
    import numpy as np

    return [
        ct.TensorType(
            name=name,
            shape=(1, *array.shape[1:]),
            dtype=np.float32 if array.dtype.kind == "f" else np.int32,
        )
        for name, array in model.examples.items()
    ]
