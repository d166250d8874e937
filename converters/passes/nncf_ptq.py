"""NNCF post-training int8 quantization of an OpenVINO IR."""

from __future__ import annotations

from pathlib import Path

from converters.errors import ConversionError
from converters.pipeline import NNCFStep
from converters.quiet import quiet_toolchains
from converters.types import Artifact, StepContext


class NNCFPass:
    """``nncf_ptq``: int8 weights and activations; ``transformer`` enables NNCF's transformer scheme."""

    def __init__(self, config: NNCFStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def run(self, artifact: Artifact, out: Path) -> Artifact:
        config = self.config
        data = self.context.calibration.head(config.subset_size)
        names = list(artifact.meta.get("input_names", data.inputs.keys()))
        try:
            with quiet_toolchains():
                import nncf
                import openvino as ov

                model = ov.Core().read_model(str(artifact.path))
                samples = [{name: data.sample(i)[name] for name in names} for i in range(len(data))]
                ignored = None
                if config.ignore_last_layer:
                    matmuls = [
                        op.get_friendly_name()
                        for op in model.get_ordered_ops()
                        if op.get_type_name() in ("MatMul", "Convolution")
                    ]
                    ignored = nncf.IgnoredScope(names=matmuls[-1:])
                preset = (
                    nncf.QuantizationPreset.MIXED if config.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
                )
                kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if config.transformer else {}
                quantized = nncf.quantize(
                    model,
                    nncf.Dataset(samples),
                    preset=preset,
                    subset_size=len(samples),
                    fast_bias_correction=config.fast_bias_correction,
                    ignored_scope=ignored,
                    **kwargs,
                )
                ov.save_model(quantized, str(out / "model.xml"), compress_to_fp16=False)
        except Exception as exc:
            raise ConversionError(
                f"NNCF quantization failed: {exc}", target=self.context.target.name, stage="nncf_ptq"
            ) from exc
        meta = dict(artifact.meta)
        meta.update(
            quantization="nncf_ptq",
            preset=config.preset,
            transformer=config.transformer,
            calibration_samples=len(data),
            ignore_last_layer=config.ignore_last_layer,
            weights="int8",
        )
        meta.pop("note", None)
        return Artifact(out, "model.xml", "openvino", "int8", ("model.xml", "model.bin"), meta)
