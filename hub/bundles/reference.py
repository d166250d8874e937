"""The drift reference profile a bundle carries: what its model's inputs and answers look like on known data.

Built the way an agent builds telemetry, so the two compare like for like: input rows flattened to features
``f0..fN`` (or the manifest's feature names), answers post-processed as the agent does (softmax, labels).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.model import postprocess
from agent.telemetry import MAX_SKETCHED_FEATURES
from fleet.telemetry import ReferenceProfile
from fleet.wire.bundle import BundleManifest

__all__ = ["MAX_REFERENCE_ROWS", "reference_profile"]

#: Rows sketched at most; KLL sketches keep their error bound however many rows feed them.
MAX_REFERENCE_ROWS = 20_000


def reference_profile(manifest: BundleManifest, inputs: np.ndarray, outputs: np.ndarray | None) -> dict[str, Any]:
    """The JSON reference profile of ``inputs`` (model inputs) and the model's raw ``outputs`` on them."""
    rows = np.asarray(inputs)[:MAX_REFERENCE_ROWS]
    flat = rows.reshape(rows.shape[0], -1).astype(np.float64)
    features: dict[str, np.ndarray] = {}
    if flat.shape[1] <= MAX_SKETCHED_FEATURES:  # agents sketch no more than this either
        names = manifest.feature_names
        if not names or len(names) != flat.shape[1]:
            names = [f"f{i}" for i in range(flat.shape[1])]
        features = {name: flat[:, i] for i, name in enumerate(names)}
    predictions: list[str] | None = None
    confidences: list[float] | None = None
    if outputs is not None and manifest.postprocess.kind == "classification":
        answers = postprocess(np.asarray(outputs)[: len(rows)], manifest.postprocess)
        predictions = [a.label for a in answers]
        confidences = [a.confidence for a in answers]
    profile = ReferenceProfile.from_arrays(features, predictions=predictions, confidences=confidences)
    return profile.model_dump(mode="json")
