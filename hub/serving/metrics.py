"""Prometheus metrics of the serving tier, registered on a registry the caller owns (no global state).

Names follow Prometheus conventions: base units (seconds), ``_total`` on counters (added by the client
library), labels ``model`` and ``version``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """The metric children of one model version, bound once so the hot path does no label lookups."""

    requests: Counter
    failures: Counter  # parent: labelled model, version, reason
    inferences: Counter
    batches: Counter
    request_seconds: Histogram
    queue_seconds: Histogram
    compute_seconds: Histogram
    batch_size: Histogram
    queue_depth: Gauge
    model: str
    version: str

    def failure(self, reason: str) -> None:
        """Count one failed request with its reason (``timeout``, ``overloaded``, ``invalid_input``...)."""
        self.failures.labels(self.model, self.version, reason).inc()


class ServingMetrics:
    """All serving metrics on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("model", "version")
        self.registry = registry
        self.requests = Counter("edgefleet_serving_requests", "Inference requests received.", labels, registry=registry)
        self.failures = Counter(
            "edgefleet_serving_request_failures",
            "Inference requests that failed, by reason.",
            (*labels, "reason"),
            registry=registry,
        )
        self.inferences = Counter(
            "edgefleet_serving_inferences",
            "Rows inferred (a batch of 8 rows counts 8).",
            labels,
            registry=registry,
        )
        self.batches = Counter("edgefleet_serving_batches", "Model executions (batches).", labels, registry=registry)
        self.request_seconds = Histogram(
            "edgefleet_serving_request_duration_seconds",
            "Time from request arrival to response, per request.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "edgefleet_serving_queue_duration_seconds",
            "Time a request waited in the batch queue.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute_seconds = Histogram(
            "edgefleet_serving_compute_duration_seconds",
            "Time one batch spent in the runtime.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "edgefleet_serving_batch_size",
            "Rows per executed batch.",
            labels,
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "edgefleet_serving_queue_depth", "Requests waiting in the batch queue.", labels, registry=registry
        )
        self.models_loaded = Gauge("edgefleet_serving_models_loaded", "Model versions loaded.", registry=registry)

    def bind(self, model: str, version: str) -> ModelMetrics:
        """The children of one model version."""
        return ModelMetrics(
            requests=self.requests.labels(model, version),
            failures=self.failures,
            inferences=self.inferences.labels(model, version),
            batches=self.batches.labels(model, version),
            request_seconds=self.request_seconds.labels(model, version),
            queue_seconds=self.queue_seconds.labels(model, version),
            compute_seconds=self.compute_seconds.labels(model, version),
            batch_size=self.batch_size.labels(model, version),
            queue_depth=self.queue_depth.labels(model, version),
            model=model,
            version=version,
        )

    def unbind(self, model: str, version: str) -> None:
        """Drop the gauge of an unloaded model (counters and histograms keep their history)."""
        with contextlib.suppress(KeyError):
            self.queue_depth.remove(model, version)
