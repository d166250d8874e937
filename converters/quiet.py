"""Silence the toolchains' chatter (deprecation warnings, logs, progress bars) while a step runs."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

_NOISY_LOGGERS = (
    "torch.onnx",
    "torch._dynamo",
    "torch.export",
    "torch._export",
    "torch.fx",
    "nncf",
    "coremltools",
    "absl",
    "tensorflow",
    "litert_torch",
    "ai_edge_torch",
    "onnxruntime",
    "onnxscript",
    "root",
)


@contextlib.contextmanager
def quiet_toolchains() -> Iterator[io.StringIO]:
    """Inside the block: no warnings, only ERROR logs from the toolchains, and Python-level stdout and
    stderr (rich/tqdm progress bars) captured in the yielded buffer."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    buffer = io.StringIO()
    previous_tqdm = os.environ.get("TQDM_DISABLE")
    with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        warnings.simplefilter("ignore")
        os.environ["TQDM_DISABLE"] = "1"
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield buffer
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
            if previous_tqdm is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = previous_tqdm
