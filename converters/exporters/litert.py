"""LiteRT exporter through litert-torch; applies a following ``litert_int8`` pass while converting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters.exporters._torch import captured_stderr, io_meta, require_module, wrapped
from converters.pipeline import LiteRTExportStep, LiteRTInt8Step
from converters.quiet import quiet_toolchains
from converters.source import SourceModel
from converters.types import Artifact, StepContext
from targets import Target


class LiteRTExporter:
    """``litert_export``: a ``model.tflite`` with static input shapes (batch 1)."""

    def __init__(self, config: LiteRTExportStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def export(self, model: SourceModel, target: Target, out: Path) -> Artifact:
        module = require_module(model, target.name, "export")
        int8 = next((s for s in self.context.fused if isinstance(s, LiteRTInt8Step)), None)
        stage = "litert_int8" if int8 else "export"
        path = out / "model.tflite"
        with wrapped(model, target.name, stage), quiet_toolchains(), captured_stderr():
            import litert_torch
            import torch

            litert_torch.config.show_progress = False
            examples = tuple(t[:1] for t in model.torch_examples())
            with torch.no_grad():
                if int8 is None or int8.mode == "dynamic_range":
                    edge = litert_torch.convert(module, examples)
                else:
                    edge = _convert_int8(module, examples, model, int8, self.context)
            edge.export(str(path))
            if int8 is not None and int8.mode == "dynamic_range":
                _dynamic_range(path)
        meta = io_meta(model, static_shapes={k: [1, *v.shape[1:]] for k, v in model.examples.items()})
        meta.update(_io_quantization(path))
        if int8 is not None:
            static = int8.mode == "static"
            calibrated = min(len(self.context.calibration), int8.max_calibration_samples)
            meta["calibration_samples"] = calibrated if static else 0
            meta["per_channel"] = int8.per_channel or not static  # dynamic range is always per-channel
            meta["quantization"] = int8.mode
        return Artifact(out, path.name, "tflite", "int8" if int8 else "fp32", (path.name,), meta)


def _convert_int8(
    module: Any, examples: tuple[Any, ...], model: SourceModel, step: LiteRTInt8Step, context: StepContext
) -> Any:
    """PT2E static quantization (int8 weights and activations), calibrated sample by sample."""
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import quantize_pt2e

    graph = torch.export.export(module, examples).module()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=step.per_channel)
    )
    prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
    data = context.calibration.head(step.max_calibration_samples)
    for index in range(len(data)):
        sample = data.sample(index)
        prepared(*(torch.from_numpy(np.ascontiguousarray(sample[n])) for n in model.input_names))
    converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    return litert_torch.convert(converted, examples, quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))


def _dynamic_range(path: Path) -> None:
    """Rewrite the float ``.tflite`` at ``path`` with per-channel int8 weights and activations
    quantized at run time (AI Edge Quantizer's recipe: PT2E's dynamic mode quantizes embedding
    tables with a zero point LiteRT's lookup kernel refuses)."""
    from ai_edge_quantizer import quantizer, recipe

    quantized = quantizer.Quantizer(str(path), recipe.dynamic_wi8_afp32()).quantize()
    quantized.export_model(str(path), overwrite=True)


def _io_quantization(path: Path) -> dict[str, Any]:
    """Input/output dtypes and (scale, zero point) of a .tflite file, so runners can (de)quantize."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()

    def describe(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "dtype": np.dtype(d["dtype"]).name,
                "scale": float(d["quantization"][0]),
                "zero_point": int(d["quantization"][1]),
            }
            for d in details
        ]

    described_in, described_out = describe(inputs), describe(outputs)
    int8_io = any(d["dtype"] == "int8" for d in described_in + described_out)
    return {"tflite_inputs": described_in, "tflite_outputs": described_out, "int8_io": int8_io}
