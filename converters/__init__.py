"""Turn one source model into a checked, measured variant per hardware target.

Public surface: `export_onnx` (a module to one self-contained ONNX file), `convert` (source model to
every target's variants plus ``report.json`` and a model card) and `load_report`.

Exceptions::

    ConversionError                  (a RuntimeError; .target and .stage when known)
     ├── InvalidSourceError          the source model or its example inputs cannot be loaded or run
     ├── InvalidDataError            a calibration/evaluation .npz is missing or does not fit the model
     ├── MissingExtraError           a step's toolchain is not installed (.step, .module, .extra)
     ├── UnsupportedOperatorError    an operator has no translation (.operator, .target, .stage)
     ├── PipelineConfigError         (also a ValueError) an invalid pipeline or step configuration
     └── ExecutionError              a variant could not be loaded or run on this host
"""

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

__all__ = [
    "ConversionError",
    "ExecutionError",
    "InvalidDataError",
    "InvalidSourceError",
    "MissingExtraError",
    "PipelineConfigError",
    "UnsupportedOperatorError",
    "export_onnx",
]
