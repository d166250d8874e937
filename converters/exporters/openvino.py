"""OpenVINO IR exporter (``model.xml`` + ``model.bin``) through ``openvino.convert_model``."""

from __future__ import annotations

from pathlib import Path

from converters.exporters._torch import export_program, io_meta, wrapped
from converters.pipeline import OpenVINOExportStep
from converters.quiet import quiet_toolchains
from converters.source import SourceModel
from converters.types import Artifact, StepContext
from targets import Target


class OpenVINOExporter:
    """``openvino_export``: fp32 weights unless ``compress_to_fp16`` (then weights are stored as fp16)."""

    def __init__(self, config: OpenVINOExportStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def export(self, model: SourceModel, target: Target, out: Path) -> Artifact:
        xml = out / "model.xml"
        with wrapped(model, target.name, "export"), quiet_toolchains():
            import openvino as ov

            if model.kind == "onnx":
                converted = ov.convert_model(str(model.path))
            elif model.kind == "torchscript":
                converted = ov.convert_model(model.module, example_input=model.torch_examples())
            else:
                converted = ov.convert_model(export_program(model))
            for port, name in zip(converted.inputs, model.input_names, strict=True):
                port.get_tensor().set_names({name})
            for port, name in zip(converted.outputs, model.output_names, strict=False):
                port.get_tensor().set_names({name})
            # save_model compresses weights to fp16 unless told not to: label precision by what is stored.
            ov.save_model(converted, str(xml), compress_to_fp16=self.config.compress_to_fp16)
        precision = "fp16" if self.config.compress_to_fp16 else "fp32"
        meta = io_meta(model, weights=precision)
        if self.config.compress_to_fp16:
            meta["note"] = "weights stored as fp16; the CPU plugin computes in fp32"
        return Artifact(out, xml.name, "openvino", precision, (xml.name, "model.bin"), meta)
