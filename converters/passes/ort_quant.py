"""ONNX Runtime int8 quantization: dynamic, and static QDQ calibrated with MinMax, Entropy or Percentile."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from converters.errors import ConversionError
from converters.passes.onnx_passes import _onnx_artifact
from converters.pipeline import Int8DynamicStep, Int8StaticStep
from converters.quiet import quiet_toolchains
from converters.types import Artifact, StepContext

_COMPUTE_OPS = ("Conv", "MatMul", "Gemm", "ConvTranspose")


def activation_matmuls(path: Path) -> tuple[str, ...]:
    """MatMul nodes whose inputs are both activations (attention scores and context), no weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    constants = {t.name for t in model.graph.initializer}
    constants |= {out for n in model.graph.node if n.op_type == "Constant" for out in n.output}
    return tuple(
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and n.name and not any(i in constants for i in n.input)
    )


def first_last_compute_nodes(path: Path) -> tuple[str, ...]:
    """Names of the first and last Conv/MatMul/Gemm nodes: the usual candidates to keep in float."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    nodes = [n.name for n in model.graph.node if n.op_type in _COMPUTE_OPS and n.name]
    return tuple(dict.fromkeys([nodes[0], nodes[-1]])) if nodes else ()


class Int8DynamicPass:
    """``int8_dynamic``: int8 weights, activations quantized at run time (no calibration data)."""

    def __init__(self, config: Int8DynamicStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def run(self, artifact: Artifact, out: Path) -> Artifact:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        try:
            with quiet_toolchains():
                quantize_dynamic(
                    str(artifact.path),
                    str(out / "model.onnx"),
                    op_types_to_quantize=list(self.config.op_types) or None,
                    per_channel=self.config.per_channel,
                    weight_type=QuantType.QInt8,
                )
        except Exception as exc:
            raise ConversionError(
                f"dynamic int8 quantization failed: {exc}",
                target=self.context.target.name,
                stage="int8_dynamic",
            ) from exc
        return _onnx_artifact(
            artifact,
            out,
            "int8",
            quantization="dynamic",
            per_channel=self.config.per_channel,
            op_types=list(self.config.op_types) or "all",
        )


class Int8StaticPass:
    """``int8_static``: QDQ int8 weights and activations, ranges calibrated on the calibration data."""

    def __init__(self, config: Int8StaticStep, context: StepContext) -> None:
        self.config = config
        self.context = context

    def run(self, artifact: Artifact, out: Path) -> Artifact:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        config = self.config
        methods = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }
        excluded = list(config.nodes_to_exclude)
        if config.exclude_first_last:
            excluded += [n for n in first_last_compute_nodes(artifact.path) if n not in excluded]
        if not config.activation_matmuls:
            excluded += [n for n in activation_matmuls(artifact.path) if n not in excluded]
        data = self.context.calibration.head(config.max_calibration_samples)
        names = list(artifact.meta.get("input_names", data.inputs.keys()))
        extra: dict[str, Any] = {"CalibPercentile": config.percentile} if config.calibration == "percentile" else {}
        activation = QuantType.QUInt8 if config.activation_type == "uint8" else QuantType.QInt8
        with tempfile.TemporaryDirectory(dir=out) as scratch:
            source = Path(scratch) / "prepared.onnx"
            _pre_process(artifact.path, source)
            try:
                with quiet_toolchains():
                    quantize_static(
                        str(source),
                        str(out / "model.onnx"),
                        _reader(data, names),
                        quant_format=QuantFormat.QDQ,
                        per_channel=config.per_channel,
                        activation_type=activation,
                        weight_type=QuantType.QInt8,
                        calibrate_method=methods[config.calibration],
                        op_types_to_quantize=list(config.op_types) or None,
                        nodes_to_exclude=excluded,
                        extra_options=extra,
                    )
            except Exception as exc:
                raise ConversionError(
                    f"static int8 quantization failed: {exc}",
                    target=self.context.target.name,
                    stage="int8_static",
                ) from exc
        return _onnx_artifact(
            artifact,
            out,
            "int8",
            quantization="static_qdq",
            calibration=config.calibration,
            per_channel=config.per_channel,
            nodes_kept_float=excluded,
            activation_type=config.activation_type,
            op_types=list(config.op_types) or "all",
            calibration_samples=len(data),
        )


def _pre_process(source: Path, target: Path) -> None:
    """ORT's quantization pre-processing without symbolic shape inference (it fails on transformer
    graphs); fall back to the unprocessed model if even that fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with quiet_toolchains():
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    except Exception:
        shutil.copyfile(source, target)


def _reader(data: Any, names: list[str]) -> Any:
    """A CalibrationDataReader feeding one sample at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._iter: Iterator[dict[str, Any]] = (
                {name: data.sample(i)[name] for name in names} for i in range(len(data))
            )

        def get_next(self) -> dict[str, Any] | None:
            return next(self._iter, None)

    return Reader()
