"""Check a variant against the source on validation inputs: errors, top-1 agreement, accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np

from converters.data import Dataset
from converters.errors import ExecutionError
from converters.runners import RunnerFn


def compare(reference: np.ndarray, output: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Any]:
    """Max absolute/relative error of ``output`` against ``reference``; top-1 agreement and accuracy
    for classifier outputs (last dimension > 1). Relative error is scaled by the reference's range."""
    reference = np.asarray(reference, dtype=np.float64)
    output = np.asarray(output, dtype=np.float64).reshape(reference.shape)
    difference = np.abs(output - reference)
    scale = float(np.max(np.abs(reference))) or 1.0
    metrics: dict[str, Any] = {
        "max_abs_error": float(difference.max()) if difference.size else 0.0,
        "mean_abs_error": float(difference.mean()) if difference.size else 0.0,
        "max_rel_error": float(difference.max() / scale) if difference.size else 0.0,
        "top1_agreement": None,
        "accuracy": None,
    }
    if reference.ndim >= 2 and reference.shape[-1] > 1:
        classes = int(reference.shape[-1])
        ref_top = reference.reshape(len(reference), -1, classes).argmax(-1)
        out_top = output.reshape(len(output), -1, classes).argmax(-1)
        metrics["top1_agreement"] = float((ref_top == out_top).mean())
        if labels is not None and ref_top.shape[1] == 1:
            metrics["accuracy"] = float((out_top[:, 0] == labels).mean())
    return metrics


def accuracy_of(output: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy of classifier ``output`` against ``labels`` (``None`` without labels)."""
    if labels is None or output.ndim != 2 or output.shape[-1] < 2:
        return None
    return float((output.argmax(-1) == labels).mean())


def run_dataset(runner: RunnerFn, data: Dataset, batch_size: int = 64) -> np.ndarray:
    """The runner's outputs over every sample of ``data``."""
    try:
        return np.concatenate([runner(batch) for batch in data.batches(batch_size)])
    except Exception as exc:
        raise ExecutionError(f"variant failed on the evaluation data: {exc}", stage="evaluate") from exc


class ReferenceEvaluator:
    """The default `Evaluator`: runs the variant over the data and compares with the source outputs."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def evaluate(self, runner: RunnerFn, reference: np.ndarray, data: Dataset) -> dict[str, Any]:
        return compare(reference, run_dataset(runner, data, self.batch_size), data.labels)
