"""The captured rows of a model version as arrays: ``inputs`` (rows in the model's input shape), the answers given
(``labels``, ``confidences``) and where each row came from (``device_ids``, ``targets``, ``timestamps``)."""

from __future__ import annotations

import io

import numpy as np

from fleet.selection import parse_selector, selector_labels
from hub.errors import InvalidRequestError
from hub.registry import Registry
from hub.registry.captures import CaptureStore


def export_samples(
    registry: Registry, store: CaptureStore, model: str, version: str, cohort: str | None = None
) -> dict[str, np.ndarray]:
    """The captured rows of ``model:version`` (of devices matching the ``cohort`` label selector, if given)."""
    selector = parse_selector(cohort) if cohort else None
    labels = {d.id: dict(d.labels) for d in registry.list_devices()} if selector else {}
    inputs, answers, confidences, devices, targets, stamps = [], [], [], [], [], []
    shape: list[int] | None = None
    for row in store.rows(model, version):
        if selector is not None and not selector.matches(selector_labels(labels.get(row.device_id, {}), row.target)):
            continue
        if shape is not None and row.shape != shape:
            raise InvalidRequestError(
                f"captures of {model}:{version} disagree on the input shape: {shape} and {row.shape}"
            )
        shape = row.shape
        for sample in row.samples:
            inputs.append(sample["input"])
            answers.append(sample["label"])
            confidences.append(sample["confidence"])
            devices.append(row.device_id)
            targets.append(row.target)
            stamps.append(sample["ts"])
    rows = len(inputs)
    return {
        "inputs": np.asarray(inputs, dtype=np.float32).reshape(rows, *(shape or [0])),
        "labels": np.asarray(answers, dtype=str),
        "confidences": np.asarray(confidences, dtype=np.float32),
        "device_ids": np.asarray(devices, dtype=str),
        "targets": np.asarray(targets, dtype=str),
        "timestamps": np.asarray(stamps, dtype=np.float64),
    }


def samples_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """``arrays`` as a compressed ``.npz`` file (plain arrays: it loads without pickle)."""
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()
