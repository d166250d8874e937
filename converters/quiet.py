"""Silence the toolchains' chatter (deprecation warnings, info logs) while a step runs."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

_NOISY_LOGGERS = (
    "torch.onnx",
    "torch._dynamo",
    "torch.export",
    "torch._export",
    "nncf",
    "coremltools",
    "absl",
    "tensorflow",
    "litert_torch",
    "ai_edge_torch",
)


@contextlib.contextmanager
def quiet_toolchains() -> Iterator[None]:
    """Suppress warnings and below-ERROR logs from the conversion toolchains inside the block."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
