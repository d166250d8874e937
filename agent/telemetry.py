"""Telemetry on the device: per-version statistics drained into batches, and the on-disk outbox.

The outbox keeps batches on disk while the broker is unreachable, bounded by count (the oldest are
dropped first, and counted), and sends them in order once connected; each batch carries an id, so a
batch sent twice around a reconnect is stored once by the hub.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fleet.wire import topics
from fleet.wire.messages import ShadowStats, TelemetryBatch
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS, FeatureSketcher, HistogramAccumulator

log = logging.getLogger(__name__)
MAX_SKETCHED_FEATURES = 256
SKETCH_FLUSH_ROWS = 256


class _VersionStats:
    def __init__(self, model: str, version: str) -> None:
        self.model = model
        self.version = version
        self.window_start = time.time()
        self.requests = 0
        self.errors = 0
        self.offloaded = 0
        self.latency = HistogramAccumulator(LATENCY_BUCKETS_MS)
        self.confidence = HistogramAccumulator(CONFIDENCE_BUCKETS)
        self.predictions: Counter[str] = Counter()
        self.sketcher = FeatureSketcher()
        # Input rows wait here and enter the sketches a column at a time: one sketch update per column per
        # SKETCH_FLUSH_ROWS rows instead of one per column per request (bounded memory either way).
        self.pending_rows: list[np.ndarray] = []
        self.pending_count = 0
        self.feature_names: list[str] | None = None
        self.shadow_version: str | None = None
        self.shadow_compared = 0
        self.shadow_agreed = 0
        self.shadow_latency = HistogramAccumulator(LATENCY_BUCKETS_MS)

    def add_rows(self, rows: np.ndarray, names: list[str] | None) -> None:
        if self.pending_rows and rows.shape[1] != self.pending_rows[0].shape[1]:
            self.flush_rows()
        self.feature_names = names
        self.pending_rows.append(rows)
        self.pending_count += len(rows)
        if self.pending_count >= SKETCH_FLUSH_ROWS:
            self.flush_rows()

    def flush_rows(self) -> None:
        if not self.pending_rows:
            return
        block = np.concatenate(self.pending_rows)
        names = self.feature_names
        for column in range(block.shape[1]):
            self.sketcher.update_column(names[column] if names else f"f{column}", block[:, column])
        self.pending_rows, self.pending_count = [], 0

    def shadow_stats(self) -> ShadowStats | None:
        if self.shadow_version is None:
            return None
        return ShadowStats(
            candidate_version=self.shadow_version,
            compared=self.shadow_compared,
            agreed=self.shadow_agreed,
            latency_ms=self.shadow_latency.to_histogram(),
        )


class TelemetryCollector:
    """Accumulates what inference observed, per model version, until drained into batches."""

    def __init__(self, device_id: str, target: str) -> None:
        self.device_id = device_id
        self.target = target
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], _VersionStats] = {}

    def _get(self, model: str, version: str) -> _VersionStats:
        key = (model, version)
        if key not in self._stats:
            self._stats[key] = _VersionStats(model, version)
        return self._stats[key]

    def record(
        self,
        model: str,
        version: str,
        *,
        latency_ms: float,
        labels: list[str],
        confidences: list[float],
        inputs: np.ndarray | None = None,
        feature_names: list[str] | None = None,
        offloaded: bool = False,
    ) -> None:
        """Record one successful request (a batch of ``len(labels)`` predictions)."""
        with self._lock:
            stats = self._get(model, version)
            stats.requests += 1
            stats.offloaded += int(offloaded)
            stats.latency.observe(latency_ms)
            stats.confidence.observe_many(np.asarray(confidences, dtype=np.float64))
            stats.predictions.update(labels)
            if inputs is not None:
                flat = inputs.reshape(inputs.shape[0], -1)
                if flat.shape[1] <= MAX_SKETCHED_FEATURES:
                    names = feature_names if feature_names and len(feature_names) == flat.shape[1] else None
                    stats.add_rows(flat.astype(np.float32, copy=False), names)

    def record_shadow(
        self, model: str, version: str, candidate_version: str, *, compared: int, agreed: int, latency_ms: float
    ) -> None:
        """Record a shadow comparison of ``candidate_version`` against the active ``version``."""
        with self._lock:
            stats = self._get(model, version)
            if stats.shadow_version not in (None, candidate_version):
                stats.shadow_compared = stats.shadow_agreed = 0
                stats.shadow_latency = HistogramAccumulator(LATENCY_BUCKETS_MS)
            stats.shadow_version = candidate_version
            stats.shadow_compared += compared
            stats.shadow_agreed += agreed
            stats.shadow_latency.observe(latency_ms)

    def record_error(self, model: str, version: str) -> None:
        """Record one failed request."""
        with self._lock:
            stats = self._get(model, version)
            stats.requests += 1
            stats.errors += 1

    def drain(self) -> list[TelemetryBatch]:
        """Batches for everything recorded since the last drain (one per model version with traffic)."""
        now = time.time()
        with self._lock:
            stats, self._stats = list(self._stats.values()), {}
        for s in stats:
            s.flush_rows()
        return [
            TelemetryBatch(
                batch_id=uuid.uuid4().hex,
                device_id=self.device_id,
                target=self.target,
                model=s.model,
                version=s.version,
                window_start=s.window_start,
                window_end=now,
                requests=s.requests,
                errors=s.errors,
                offloaded=s.offloaded,
                latency_ms=s.latency.to_histogram(),
                confidence=s.confidence.to_histogram(),
                predictions=dict(s.predictions),
                feature_sketches=s.sketcher.drain(),
                shadow=s.shadow_stats(),
            )
            for s in stats
            if s.requests
        ]


class Outbox:
    """A bounded, ordered queue of telemetry batches in a directory, one file per batch."""

    def __init__(self, directory: Path, *, max_batches: int = 10_000) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.max_batches = max_batches
        self.dropped = 0
        self._lock = threading.Lock()
        existing = sorted(directory.glob("*.json"))
        self._seq = int(existing[-1].name.split("-")[0]) + 1 if existing else 0
        self.has_items = threading.Event()
        if existing:
            self.has_items.set()

    def put(self, batch: TelemetryBatch) -> None:
        """Append a batch durably; drop the oldest when full."""
        with self._lock:
            path = self.directory / f"{self._seq:012d}-{batch.batch_id}.json"
            self._seq += 1
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(batch.model_dump_json().encode())
            os.replace(tmp, path)
            files = sorted(self.directory.glob("*.json"))
            for old in files[: max(0, len(files) - self.max_batches)]:
                old.unlink(missing_ok=True)
                self.dropped += 1
            self.has_items.set()

    def pending(self) -> list[Path]:
        """Queued batch files, oldest first."""
        with self._lock:
            files = sorted(self.directory.glob("*.json"))
            if not files:
                self.has_items.clear()
            return files

    def __len__(self) -> int:
        return len(self.pending())


class TelemetrySender:
    """Moves batches from the outbox to the broker, oldest first, deleting each once acknowledged."""

    def __init__(self, outbox: Outbox, device_id: str, publish_and_wait: Callable[[str, bytes], bool]) -> None:
        self.outbox = outbox
        self.topic = topics.device_topic(device_id, "telemetry")
        self._publish_and_wait = publish_and_wait
        self.sent = 0

    def flush(self) -> int:
        """Send everything queued; stop at the first batch the broker does not acknowledge."""
        sent = 0
        for path in self.outbox.pending():
            try:
                payload = path.read_bytes()
            except FileNotFoundError:
                continue  # dropped by the bound meanwhile
            if not self._publish_and_wait(self.topic, payload):
                break
            path.unlink(missing_ok=True)
            sent += 1
        self.sent += sent
        return sent
