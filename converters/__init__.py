"""Turn one source model into a checked, measured variant per hardware target.

Public surface: `export_onnx` (a module to one self-contained ONNX file), `convert` (a source model to
every target's variants plus ``report.json`` and ``MODEL_CARD.md``) and `load_report` (read and verify
a conversion's report: the hub's entry point). Toolchains are imported inside functions only.

Exceptions::

    ConversionError                  (a RuntimeError; .target and .stage when known)
     ├── InvalidSourceError          the source model or its example inputs cannot be loaded or run
     ├── InvalidDataError            a calibration/evaluation .npz is missing or does not fit the model
     ├── MissingExtraError           a step's toolchain is not installed (.step, .module, .extra)
     ├── UnsupportedOperatorError    an operator has no translation (.operator, .target, .stage)
     ├── PipelineConfigError         (also a ValueError) an invalid pipeline or step configuration
     └── ExecutionError              a variant could not be loaded or run on this host
"""

from converters.convert import ConvertOptions, convert, plan_variants
from converters.errors import (
    ConversionError,
    ExecutionError,
    InvalidDataError,
    InvalidSourceError,
    MissingExtraError,
    PipelineConfigError,
    UnsupportedOperatorError,
)
from converters.onnx_export import export_onnx
from converters.report import ConversionReport, VariantReport, load_report

__all__ = [
    "ConversionError",
    "ConversionReport",
    "ConvertOptions",
    "ExecutionError",
    "InvalidDataError",
    "InvalidSourceError",
    "MissingExtraError",
    "PipelineConfigError",
    "UnsupportedOperatorError",
    "VariantReport",
    "convert",
    "export_onnx",
    "load_report",
    "plan_variants",
]
