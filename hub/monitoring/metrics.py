"""Prometheus metrics of the fleet as the hub sees it, on a registry the caller owns (no global state).

Naming follows Prometheus: base units (seconds, ratios), ``_total`` on counters (added by the client),
histograms for distributions, and never a per-device label (a fleet of 10,000 devices would be 10,000
series per metric). Labels are model, version and device class (``target``), plus cohort and feature for
drift and the rollout id for rollout state.

Device histograms arrive pre-bucketed in `TelemetryBatch` (fixed edges from `fleet.telemetry`); they are
exposed by a small collector that adds bucket counts, since ``prometheus_client.Histogram`` only takes
single observations.

Metrics::

    edgefleet_device_inference_latency_seconds        histogram  model, version, target
    edgefleet_device_prediction_confidence_ratio      histogram  model, version, target
    edgefleet_device_inference_requests_total         counter    model, version, target
    edgefleet_device_inference_errors_total           counter    model, version, target
    edgefleet_device_inference_offloaded_total        counter    model, version, target
    edgefleet_device_predictions_total                counter    model, version, target, label
    edgefleet_shadow_comparisons_total                counter    model, version, candidate
    edgefleet_shadow_agreements_total                 counter    model, version, candidate
    edgefleet_telemetry_batches_total                 counter    result (accepted, duplicate, rejected, unstored)
    edgefleet_drift_score                             gauge      model, version, cohort, feature, test
    edgefleet_drift_detected                          gauge      model, version, cohort, feature
    edgefleet_devices_online                          gauge      target
    edgefleet_devices_registered                      gauge      target
    edgefleet_rollout_state                           gauge      rollout, model, version, state
    edgefleet_canary_score                            gauge      rollout
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from fleet.canary import CanaryReport
from fleet.drift import DriftReport
from fleet.wire.fast_telemetry import FastTelemetryBatch
from fleet.wire.messages import Histogram, TelemetryBatch
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS

__all__ = ["FleetMetrics", "PresummedHistogram"]

OTHER_LABEL = "_other"


class PresummedHistogram(Collector):
    """A Prometheus histogram fed with bucket counts instead of single observations.

    ``edges`` are the exposed upper bounds (in the metric's unit). A histogram whose edges differ from
    them is re-bucketed by each source bucket's upper edge (never under-reporting a value's size).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], edges: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.edges = np.asarray(edges, dtype=np.float64)
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()

    def add(self, labels: Sequence[str], hist: Histogram, *, scale: float = 1.0) -> None:
        """Add a histogram (its edges and total multiplied by ``scale``, e.g. 0.001 for ms -> s)."""
        self.add_counts(labels, hist.edges, hist.counts, hist.total, scale=scale)

    def add_counts(
        self,
        labels: Sequence[str],
        edges: Sequence[float],
        counts: Sequence[float] | np.ndarray,
        total: float,
        *,
        scale: float = 1.0,
    ) -> None:
        """`add` for bucket counts over ``edges`` (e.g. many histograms with the same edges, summed)."""
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        src_edges = np.asarray(edges, dtype=np.float64) * scale
        counts = np.asarray(counts, dtype=np.float64)
        if src_edges.shape == self.edges.shape and np.allclose(src_edges, self.edges, rtol=1e-9, atol=0):
            mapped = counts
        else:
            upper = np.append(src_edges, np.inf)
            idx = np.searchsorted(self.edges, upper, side="left")
            mapped = np.bincount(idx, weights=counts, minlength=self.edges.size + 1).astype(np.float64)
        key = tuple(labels)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = (np.zeros(self.edges.size + 1), [0.0])
            series[0][:] += mapped
            series[1][0] += total * scale

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(k, c.copy(), s[0]) for k, (c, s) in self._series.items()]
        for labels, counts, total in snapshot:
            cumulative = np.cumsum(counts)
            buckets = [(floatToGoString(e), float(c)) for e, c in zip(self.edges, cumulative[:-1], strict=True)]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(labels), buckets, sum_value=total)
        yield family


class FleetMetrics:
    """The hub's fleet metrics on ``registry``; update them with `observe_batch`, `record_drift`,
    `set_devices`, `set_rollout_state` and `record_canary`."""

    def __init__(self, registry: CollectorRegistry, *, max_prediction_labels: int = 50) -> None:
        self.registry = registry
        self.max_prediction_labels = max_prediction_labels
        dev = ("model", "version", "target")
        self.latency = PresummedHistogram(
            "edgefleet_device_inference_latency_seconds",
            "On-device inference latency.",
            dev,
            [e / 1000 for e in LATENCY_BUCKETS_MS],
        )
        self.confidence = PresummedHistogram(
            "edgefleet_device_prediction_confidence_ratio",
            "Confidence of on-device predictions (0-1).",
            dev,
            CONFIDENCE_BUCKETS,
        )
        registry.register(self.latency)
        registry.register(self.confidence)
        self.requests = Counter(
            "edgefleet_device_inference_requests", "Inference requests on devices.", dev, registry=registry
        )
        self.errors = Counter(
            "edgefleet_device_inference_errors",
            "Failed inference requests on devices.",
            dev,
            registry=registry,
        )
        self.offloaded = Counter(
            "edgefleet_device_inference_offloaded",
            "Requests devices offloaded to the hub.",
            dev,
            registry=registry,
        )
        self.predictions = Counter(
            "edgefleet_device_predictions",
            "Predictions on devices by predicted label.",
            (*dev, "label"),
            registry=registry,
        )
        shadow = ("model", "version", "candidate")
        self.shadow_comparisons = Counter(
            "edgefleet_shadow_comparisons",
            "Requests also run by a shadow candidate.",
            shadow,
            registry=registry,
        )
        self.shadow_agreements = Counter(
            "edgefleet_shadow_agreements",
            "Shadowed requests where the candidate agreed.",
            shadow,
            registry=registry,
        )
        self.telemetry_batches = Counter(
            "edgefleet_telemetry_batches",
            "Telemetry batches received by outcome.",
            ("result",),
            registry=registry,
        )
        self.drift_score = Gauge(
            "edgefleet_drift_score",
            "Latest drift statistic per feature and cohort (KS D, chi-square, z or distance, per test).",
            ("model", "version", "cohort", "feature", "test"),
            registry=registry,
        )
        self.drift_detected = Gauge(
            "edgefleet_drift_detected",
            "1 when the latest drift report flags the feature (after FDR correction), else 0.",
            ("model", "version", "cohort", "feature"),
            registry=registry,
        )
        self.devices_online = Gauge(
            "edgefleet_devices_online", "Devices currently online.", ("target",), registry=registry
        )
        self.devices_registered = Gauge(
            "edgefleet_devices_registered", "Devices provisioned.", ("target",), registry=registry
        )
        self.rollout_state = Gauge(
            "edgefleet_rollout_state",
            "1 for the state each rollout is in, 0 for states it has been in.",
            ("rollout", "model", "version", "state"),
            registry=registry,
        )
        self.canary_score = Gauge(
            "edgefleet_canary_score", "Latest canary analysis score (0-100).", ("rollout",), registry=registry
        )
        self._labels_seen: dict[tuple[str, str], set[str]] = {}
        self._drift_series: dict[tuple[str, str], set[tuple[str, ...]]] = {}
        self._rollouts: dict[str, tuple[str, str, str]] = {}
        self._lock = threading.Lock()

    # -- telemetry -------------------------------------------------------------------------------------

    def _prediction_label(self, model: str, version: str, label: str) -> str:
        with self._lock:
            seen = self._labels_seen.setdefault((model, version), set())
            if label in seen:
                return label
            if len(seen) >= self.max_prediction_labels:
                return OTHER_LABEL
            seen.add(label)
            return label

    def observe_batch(self, batch: TelemetryBatch) -> None:
        """Add one accepted (not duplicate) telemetry batch to the counters and histograms."""
        labels = (batch.model, batch.version, batch.target)
        self.latency.add(labels, batch.latency_ms, scale=0.001)
        self.confidence.add(labels, batch.confidence)
        self.requests.labels(*labels).inc(batch.requests)
        self.errors.labels(*labels).inc(batch.errors)
        self.offloaded.labels(*labels).inc(batch.offloaded)
        for label, count in batch.predictions.items():
            if count:
                name = self._prediction_label(batch.model, batch.version, label)
                self.predictions.labels(*labels, name).inc(count)
        if batch.shadow is not None:
            shadow = (batch.model, batch.version, batch.shadow.candidate_version)
            self.shadow_comparisons.labels(*shadow).inc(batch.shadow.compared)
            self.shadow_agreements.labels(*shadow).inc(batch.shadow.agreed)
        self.telemetry_batches.labels("accepted").inc()

    def observe_batches(self, batches: Iterable[TelemetryBatch]) -> None:
        """`observe_batch` for each batch (pass only newly stored ones, not duplicates)."""
        for batch in batches:
            self.observe_batch(batch)

    def observe_block(self, batches: Sequence[FastTelemetryBatch]) -> None:
        """`observe_batches` for validated batches (standard histogram edges), summed per series first so a
        block of hundreds costs a few metric updates per model version and device class."""
        groups: dict[tuple[str, str, str], list[FastTelemetryBatch]] = {}
        for batch in batches:
            groups.setdefault((batch.model, batch.version, batch.target), []).append(batch)
        for labels, members in groups.items():
            self._observe_series(labels, members)
        self.telemetry_batches.labels("accepted").inc(len(batches))

    def _observe_series(self, labels: tuple[str, str, str], members: list[FastTelemetryBatch]) -> None:
        model, version, _ = labels
        for histogram, field, scale in ((self.latency, "latency_ms", 0.001), (self.confidence, "confidence", 1.0)):
            hists = [getattr(b, field) for b in members]
            summed = [sum(column) for column in zip(*[h.counts for h in hists], strict=True)]  # exact ints
            histogram.add_counts(labels, hists[0].edges, summed, sum(h.total for h in hists), scale=scale)
        self.requests.labels(*labels).inc(sum(b.requests for b in members))
        self.errors.labels(*labels).inc(sum(b.errors for b in members))
        self.offloaded.labels(*labels).inc(sum(b.offloaded for b in members))
        predictions: collections.Counter[str] = collections.Counter()
        for batch in members:
            predictions.update(batch.predictions)
        for label, count in predictions.items():
            if count:
                self.predictions.labels(*labels, self._prediction_label(model, version, label)).inc(count)
        for batch in members:
            if batch.shadow is not None:
                shadow = (model, version, batch.shadow.candidate_version)
                self.shadow_comparisons.labels(*shadow).inc(batch.shadow.compared)
                self.shadow_agreements.labels(*shadow).inc(batch.shadow.agreed)

    def count_batches(self, result: str, n: int = 1) -> None:
        """Count batches that were not observed: ``duplicate``, ``rejected`` (malformed, refused for good) or
        ``unstored`` (the database was unreachable; not acknowledged, so the device sends them again)."""
        self.telemetry_batches.labels(result).inc(n)

    # -- analysis --------------------------------------------------------------------------------------

    def record_drift(self, report: DriftReport) -> None:
        """Publish the latest drift report of a model version, replacing its previous series."""
        model, version = report.model or "", report.version or ""
        fresh: set[tuple[str, ...]] = set()
        for cohort in report.cohorts:
            for result in cohort.all_results():
                if result.statistic is None or result.drifted is None:
                    continue
                score_labels = (model, version, cohort.cohort, result.feature, result.test.value)
                self.drift_score.labels(*score_labels).set(result.statistic)
                self.drift_detected.labels(*score_labels[:4]).set(1.0 if result.drifted else 0.0)
                fresh.add(score_labels)
        with self._lock:
            stale = self._drift_series.get((model, version), set()) - fresh
            self._drift_series[(model, version)] = fresh
        fresh_detected = {labels[:4] for labels in fresh}
        for labels in stale:
            self.drift_score.remove(*labels)
            if labels[:4] not in fresh_detected:
                self._remove_quietly(self.drift_detected, labels[:4])

    @staticmethod
    def _remove_quietly(gauge: Gauge, labels: tuple[str, ...]) -> None:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)

    def record_canary(self, rollout: str, report: CanaryReport) -> None:
        """Publish a canary analysis score (NaN when nothing could be judged)."""
        self.canary_score.labels(rollout).set(float("nan") if report.score is None else report.score)

    # -- fleet state -----------------------------------------------------------------------------------

    def set_devices(self, online: Mapping[str, int], registered: Mapping[str, int]) -> None:
        """Replace the device counts per target (device class)."""
        self.devices_online.clear()
        self.devices_registered.clear()
        for target in set(online) | set(registered):
            self.devices_online.labels(target).set(online.get(target, 0))
            self.devices_registered.labels(target).set(registered.get(target, 0))

    def set_rollout_state(self, rollout: str, model: str, version: str, state: str) -> None:
        """Mark ``rollout`` as being in ``state`` (the previous state's series drops to 0)."""
        with self._lock:
            previous = self._rollouts.get(rollout)
            self._rollouts[rollout] = (model, version, state)
        if previous is not None and previous != (model, version, state):
            self.rollout_state.labels(rollout, *previous).set(0)
        self.rollout_state.labels(rollout, model, version, state).set(1)

    def forget_rollout(self, rollout: str) -> None:
        """Drop every series of a finished rollout."""
        with self._lock:
            self._rollouts.pop(rollout, None)
        for labels in [s.labels for m in self.rollout_state.collect() for s in m.samples]:
            if labels.get("rollout") == rollout:
                self._remove_quietly(self.rollout_state, (rollout, labels["model"], labels["version"], labels["state"]))
        self._remove_quietly(self.canary_score, (rollout,))
