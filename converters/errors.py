"""Errors raised while converting, checking and measuring models.

Every foreign error (torch, onnx, openvino, coremltools, litert) is re-raised as one of these with
``raise ... from exc`` so callers only ever catch this family.
"""

from __future__ import annotations


class ConversionError(RuntimeError):
    """Base class: a conversion step failed.

    ``target`` and ``stage`` say where, when known (stage is e.g. ``"export"``, ``"int8_static"``).
    """

    def __init__(self, message: str, *, target: str | None = None, stage: str | None = None) -> None:
        super().__init__(message)
        self.target = target
        self.stage = stage


class InvalidSourceError(ConversionError):
    """The source model or its example inputs cannot be loaded or run."""


class InvalidDataError(ConversionError):
    """A calibration or evaluation ``.npz`` file is missing, malformed or does not match the model."""


class MissingExtraError(ConversionError):
    """A toolchain needed by a step is not installed (the CLI refuses before importing it)."""

    def __init__(self, step: str, module: str, extra: str = "convert") -> None:
        super().__init__(
            f"step {step!r} needs the Python module {module!r}; install it with `pip install edgefleet[{extra}]`",
            stage=step,
        )
        self.step = step
        self.module = module
        self.extra = extra


class UnsupportedOperatorError(ConversionError):
    """An operator in the model has no translation for this target at this stage."""

    def __init__(self, operator: str, *, target: str, stage: str, detail: str = "") -> None:
        message = f"operator {operator!r} is not supported for target {target!r} at stage {stage!r}"
        if detail:
            message += f": {detail}"
        super().__init__(message, target=target, stage=stage)
        self.operator = operator


class PipelineConfigError(ConversionError, ValueError):
    """A pipeline or step configuration is invalid (unknown step type, bad field, wrong order)."""


class ExecutionError(ConversionError):
    """A converted variant could not be loaded or run on this host."""
