"""The local inference service: the active model (swapped atomically at commit), offload to the serving
tier for heavy models or low-confidence answers, a shadow candidate on sampled requests, and telemetry."""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from typing import Any

import numpy as np

from agent.capture import InputCapture
from agent.contract import check_request, refusal
from agent.errors import BatchTooLargeError, InferenceError, NonFiniteError
from agent.model import Answer, ServableModel
from agent.offload import OffloadClient, OffloadError
from agent.telemetry import TelemetryCollector

log = logging.getLogger(__name__)
_SHADOW_QUEUE = 256


class InferenceService:
    """Answers requests; every answer names the model version that produced it and where it ran."""

    def __init__(
        self,
        collector: TelemetryCollector,
        *,
        offload: OffloadClient | None = None,
        cascade_threshold: float | None = None,
        shadow_sample_rate: float = 0.1,
        refuse_contract_violations: bool = False,
        capture: InputCapture | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.collector = collector
        self.offload = offload
        self.cascade_threshold = cascade_threshold
        self.shadow_sample_rate = shadow_sample_rate
        self.refuse_contract_violations = refuse_contract_violations
        self.capture = capture
        self._rng = rng or random.Random()
        self._model: ServableModel | None = None
        self._shadow: ServableModel | None = None
        self._lock = threading.Lock()
        self._shadow_queue: queue.Queue[Any] = queue.Queue(maxsize=_SHADOW_QUEUE)
        self._shadow_thread: threading.Thread | None = None
        self.shadow_dropped = 0
        self.requests_total = 0

    @property
    def model(self) -> ServableModel | None:
        """The model currently serving."""
        return self._model

    @property
    def shadow(self) -> ServableModel | None:
        """The candidate running in shadow, if any."""
        return self._shadow

    def activate(self, model: ServableModel | None) -> None:
        """Switch to ``model``; requests in flight finish on the model they started with."""
        with self._lock:
            self._model = model
            if model is not None and self._shadow is not None and self._shadow.sha256 == model.sha256:
                self._shadow = None  # the candidate was promoted

    def set_shadow(self, candidate: ServableModel | None) -> None:
        """Run ``candidate`` beside the active model on a sampled share of requests (None stops it)."""
        with self._lock:
            self._shadow = candidate
            if candidate is not None and self._shadow_thread is None:
                self._shadow_thread = threading.Thread(target=self._shadow_loop, name="agent-shadow", daemon=True)
                self._shadow_thread.start()

    def close(self) -> None:
        """Stop the shadow worker."""
        if self._shadow_thread is not None:
            self._shadow_queue.put(None)
            self._shadow_thread.join(timeout=10)
            self._shadow_thread = None

    def predict(self, inputs: Any, *, max_rows: int | None = None) -> dict[str, Any]:
        """Answer one input or a batch of at most ``max_rows``; every number in and out is finite.

        Raise `InferenceError` for bad input (`NonFiniteError`, `BatchTooLargeError`) or when no model is active.
        """
        model = self._model
        if model is None:
            raise InferenceError("no model is installed on this device yet")
        self.requests_total += 1
        manifest = model.manifest
        self._check_contract(model, inputs)
        start = time.perf_counter()
        try:
            # One errstate for the whole request: an overflow or NaN on the way is refused explicitly below.
            with np.errstate(over="ignore", invalid="ignore"):
                raw = _finite_array(inputs)
                # The float32 array is what prepare() would build from the list again (float models only).
                batch = model.prepare(raw if manifest.input.dtype.startswith("float") else inputs)
                if max_rows is not None and len(batch) > max_rows:
                    raise BatchTooLargeError(f"batch of {len(batch)} rows is over this device's cap of {max_rows}")
                answers, source, note = self._answer(model, batch)
            confidences = [a.confidence for a in answers]
            if not all(map(math.isfinite, confidences)):
                raise NonFiniteError("the model produced a non-finite score for this input")
        except InferenceError:
            self.collector.record_error(manifest.model, manifest.version)
            raise
        latency_ms = (time.perf_counter() - start) * 1000
        self.collector.record(
            manifest.model,
            manifest.version,
            latency_ms=latency_ms,
            labels=[a.label for a in answers],
            confidences=confidences,
            inputs=raw.reshape(len(answers), -1),
            feature_names=manifest.feature_names,
            offloaded=source == "offload",
        )
        if self.capture is not None:
            self.capture.offer(
                manifest.model, manifest.version, raw, [a.label for a in answers], [a.confidence for a in answers]
            )
        self._maybe_shadow(model, batch, answers)
        result: dict[str, Any] = {
            "model": manifest.model,
            "version": manifest.version,
            "source": source,
            "latency_ms": latency_ms,
            "predictions": [{"label": a.label, "index": a.index, "confidence": a.confidence} for a in answers],
        }
        if note:
            result["note"] = note
        return result

    def _check_contract(self, model: ServableModel, inputs: Any) -> None:
        contract = model.bundle.contract
        if contract is None:
            return
        result = check_request(contract, inputs)
        if result is None:
            return
        self.collector.record_contract(model.manifest.model, model.version, result.rows, result.violations)
        if self.refuse_contract_violations and not result.ok:
            raise refusal(result)

    def _answer(self, model: ServableModel, batch: np.ndarray) -> tuple[list[Answer], str, str]:
        manifest = model.manifest
        if manifest.heavy and self.offload is not None:
            try:
                return model.answers(self._offload(model, batch)), "offload", ""
            except OffloadError as exc:
                log.info("offload failed, answering locally: %s", exc)
                return model.answers(model.runtime.run(batch)), "local", f"offload failed: {exc}"
        answers = model.answers(model.runtime.run(batch))
        if (
            self.cascade_threshold is not None
            and self.offload is not None
            and min(a.confidence for a in answers) < self.cascade_threshold
        ):
            try:
                return model.answers(self._offload(model, batch)), "offload", "low local confidence"
            except OffloadError as exc:
                return answers, "local", f"offload failed: {exc}"
        return answers, "local", ""

    def _offload(self, model: ServableModel, batch: np.ndarray) -> np.ndarray:
        assert self.offload is not None  # checked by the caller
        manifest = model.manifest
        return self.offload.infer(manifest.model, manifest.version, manifest.input.name, batch)

    def _maybe_shadow(self, model: ServableModel, batch: np.ndarray, answers: list[Answer]) -> None:
        candidate = self._shadow
        if candidate is None or self._rng.random() >= self.shadow_sample_rate:
            return
        try:
            self._shadow_queue.put_nowait((model, candidate, batch, [a.index for a in answers]))
        except queue.Full:
            self.shadow_dropped += 1  # the shadow never slows real answers down

    def _shadow_loop(self) -> None:
        while True:
            item = self._shadow_queue.get()
            if item is None:
                return
            model, candidate, batch, active_indices = item
            try:
                start = time.perf_counter()
                candidate_answers = candidate.answers(candidate.runtime.run(batch))
                latency_ms = (time.perf_counter() - start) * 1000
                agreed = sum(int(a.index == i) for a, i in zip(candidate_answers, active_indices, strict=True))
                self.collector.record_shadow(
                    model.manifest.model,
                    model.version,
                    candidate.version,
                    compared=len(active_indices),
                    agreed=agreed,
                    latency_ms=latency_ms,
                )
            except Exception as exc:  # a broken candidate is reported, never raised into serving
                log.warning("shadow candidate %s failed: %s", candidate.version, exc)
                self.collector.record_shadow(
                    model.manifest.model,
                    model.version,
                    candidate.version,
                    compared=len(active_indices),
                    agreed=0,
                    latency_ms=0.0,
                )


def _finite_array(inputs: Any) -> np.ndarray:
    """``inputs`` as float32, refusing NaN and values that are infinite (or overflow float32).

    Call it with overflow warnings silenced (``np.errstate(over="ignore")``): an overflow becomes inf."""
    try:
        raw = np.asarray(inputs, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InferenceError(f"input is not a numeric array: {exc}") from exc
    if not np.isfinite(raw).all():
        raise NonFiniteError("input holds NaN or infinite values (or values beyond float32)")
    return raw
