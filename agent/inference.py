"""The local inference service: one active model, swapped atomically at commit, with telemetry."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from agent.errors import InferenceError
from agent.model import ServableModel
from agent.telemetry import TelemetryCollector


class InferenceService:
    """Answers requests with the active model; every answer names the model version that produced it."""

    def __init__(self, collector: TelemetryCollector) -> None:
        self.collector = collector
        self._model: ServableModel | None = None
        self._lock = threading.Lock()
        self.requests_total = 0

    @property
    def model(self) -> ServableModel | None:
        """The model currently serving."""
        return self._model

    def activate(self, model: ServableModel | None) -> None:
        """Switch to ``model``; requests in flight finish on the model they started with."""
        with self._lock:
            self._model = model

    def predict(self, inputs: Any) -> dict[str, Any]:
        """Answer one input or a batch; raise `InferenceError` for bad input or when no model is active."""
        model = self._model
        if model is None:
            raise InferenceError("no model is installed on this device yet")
        self.requests_total += 1
        manifest = model.manifest
        start = time.perf_counter()
        try:
            batch = model.prepare(inputs)
            answers = model.answers(model.runtime.run(batch))
        except InferenceError:
            self.collector.record_error(manifest.model, manifest.version)
            raise
        latency_ms = (time.perf_counter() - start) * 1000
        self.collector.record(manifest.model, manifest.version, latency_ms=latency_ms,
                              labels=[a.label for a in answers], confidences=[a.confidence for a in answers],
                              inputs=np.asarray(inputs, dtype=np.float32).reshape(len(answers), -1),
                              feature_names=manifest.feature_names)
        return {
            "model": manifest.model,
            "version": manifest.version,
            "latency_ms": latency_ms,
            "predictions": [{k: v for k, v in asdict(a).items() if k != "scores"} for a in answers],
        }
