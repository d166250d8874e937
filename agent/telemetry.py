"""Telemetry on the device: per-version statistics drained into batches, and the on-disk outbox.

The outbox keeps batches on disk, bounded by count (the oldest are dropped first, and counted), and sends
them oldest first. A batch leaves the outbox only when the hub acknowledges it (`TelemetryAck`, sent after
the batch is committed to the hub's database): a batch the broker took but no hub stored (the hub was down)
is sent again, with the same id, after ``ack_timeout_s`` or a reconnect, and the hub stores it once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.messages import ShadowStats, TelemetryAck, TelemetryBatch, decode
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS, FeatureSketcher, HistogramAccumulator
from fleet.wire.transport import Message

log = logging.getLogger(__name__)
MAX_SKETCHED_FEATURES = 256
SKETCH_FLUSH_ROWS = 256
MAX_IN_FLIGHT = 100
"""Batches sent and not yet acknowledged, at most: a hub coming back is not flooded with the whole outbox."""
REJECTED_KEPT = 100
"""Batches the hub refused for good, kept aside in ``outbox/rejected`` for inspection (the newest)."""


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
        # What a request observed waits here, in plain lists, and enters the histograms, the label counts and
        # the sketches a block at a time (one vectorised update per SKETCH_FLUSH_ROWS requests or rows):
        # a numpy call per value costs microseconds, a list append tens of nanoseconds. Exact, not sampled.
        self.pending_latencies: list[float] = []
        self.pending_confidences: list[float] = []
        self.pending_labels: list[str] = []
        self.pending_rows: list[np.ndarray] = []
        self.pending_count = 0
        self.feature_names: list[str] | None = None
        self.shadow_version: str | None = None
        self.shadow_compared = 0
        self.shadow_agreed = 0
        self.shadow_latency = HistogramAccumulator(LATENCY_BUCKETS_MS)
        self.contract_rows = 0
        self.contract_violations: Counter[str] = Counter()

    def add(self, latency_ms: float, labels: list[str], confidences: list[float]) -> None:
        self.pending_latencies.append(latency_ms)
        self.pending_labels += labels
        self.pending_confidences += confidences
        if len(self.pending_latencies) >= SKETCH_FLUSH_ROWS or len(self.pending_labels) >= SKETCH_FLUSH_ROWS:
            self.flush()

    def add_rows(self, rows: np.ndarray, names: list[str] | None) -> None:
        if self.pending_rows and rows.shape[1] != self.pending_rows[0].shape[1]:
            self.flush_rows()
        self.feature_names = names
        self.pending_rows.append(rows)
        self.pending_count += len(rows)
        if self.pending_count >= SKETCH_FLUSH_ROWS:
            self.flush_rows()

    def flush(self) -> None:
        """Move everything pending into the histograms, the label counts and the sketches."""
        if self.pending_latencies:
            self.latency.observe_many(np.array(self.pending_latencies, dtype=np.float64))
            self.pending_latencies = []
        if self.pending_confidences:
            self.confidence.observe_many(np.array(self.pending_confidences, dtype=np.float64))
            self.pending_confidences = []
        if self.pending_labels:
            self.predictions.update(self.pending_labels)
            self.pending_labels = []
        self.flush_rows()

    def flush_rows(self) -> None:
        if not self.pending_rows:
            return
        block = np.concatenate(self.pending_rows)
        names = self.feature_names
        for column, values in enumerate(np.ascontiguousarray(block.T)):
            self.sketcher.update_column(names[column] if names else f"f{column}", values)
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
            stats = self._stats.get((model, version)) or self._get(model, version)
            stats.requests += 1
            stats.offloaded += offloaded
            stats.add(latency_ms, labels, confidences)
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

    def record_contract(self, model: str, version: str, rows: int, violations: dict[str, int]) -> None:
        """Record a data contract check of ``rows`` input rows and the rows breaking each rule."""
        with self._lock:
            stats = self._get(model, version)
            stats.contract_rows += rows
            stats.contract_violations.update(violations)

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
            s.flush()
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
                contract_rows=s.contract_rows,
                contract_violations=dict(s.contract_violations),
            )
            for s in stats
            if s.requests or s.contract_rows
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

    def settle(self, stored: Iterable[str], rejected: Iterable[str] = ()) -> int:
        """Remove the batches the hub stored, and move those it refused for good to ``rejected/``
        (the newest `REJECTED_KEPT` are kept); return how many left the queue."""
        done, refused = set(stored), set(rejected)
        settled = 0
        with self._lock:
            for path in self.directory.glob("*.json"):
                batch_id = batch_id_of(path)
                if batch_id in done:
                    path.unlink(missing_ok=True)
                elif batch_id in refused:
                    quarantine = self.directory / "rejected"
                    quarantine.mkdir(exist_ok=True)
                    os.replace(path, quarantine / path.name)
                    for old in sorted(quarantine.glob("*.json"))[:-REJECTED_KEPT]:
                        old.unlink(missing_ok=True)
                else:
                    continue
                settled += 1
        return settled

    def pending(self) -> list[Path]:
        """Queued batch files, oldest first."""
        with self._lock:
            files = sorted(self.directory.glob("*.json"))
            if not files:
                self.has_items.clear()
            return files

    def __len__(self) -> int:
        return len(self.pending())


def batch_id_of(path: Path) -> str:
    """The batch id of an outbox file (``{seq}-{batch_id}.json``)."""
    return path.name.split("-", 1)[1].removesuffix(".json")


class TelemetrySender:
    """Moves batches from the outbox to the broker, oldest first; each stays in the outbox until the hub
    acknowledges it, and is sent again (same id) when no acknowledgement came within ``ack_timeout_s``.

    ``flush`` runs on the telemetry thread, ``on_ack`` on the broker's dispatcher thread.
    """

    def __init__(
        self,
        outbox: Outbox,
        device_id: str,
        publish_and_wait: Callable[[str, bytes], bool],
        *,
        ack_timeout_s: float = 30.0,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.outbox = outbox
        self.device_id = device_id
        self.topic = topics.device_topic(device_id, "telemetry")
        self.ack_topic = topics.device_topic(device_id, "telemetry-ack")
        self.ack_timeout_s = ack_timeout_s
        self.max_in_flight = max_in_flight
        self._publish_and_wait = publish_and_wait
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._sent_at: dict[str, float] = {}  # batch id -> wall-clock time of its last send
        self.sent = 0
        self.resent = 0
        self.acknowledged = 0
        self.rejected = 0

    def flush(self) -> int:
        """Send queued batches not awaiting an acknowledgement (up to ``max_in_flight`` awaiting); stop at
        the first one the broker does not take. Return how many were sent."""
        sent = 0
        now = time.time()  # wall clock, so tests move it; a clock stepped back counts as timed out
        pending = self.outbox.pending()

        def awaited(sent_at: float | None) -> bool:
            return sent_at is not None and 0 <= now - sent_at < self.ack_timeout_s

        with self._lock:
            present = {batch_id_of(p) for p in pending}
            self._sent_at = {b: t for b, t in self._sent_at.items() if b in present}  # dropped by the bound
            awaiting = sum(1 for t in self._sent_at.values() if awaited(t))
        for path in pending:
            batch_id = batch_id_of(path)
            with self._lock:
                last = self._sent_at.get(batch_id)
            if awaited(last):
                continue
            if awaiting >= self.max_in_flight:
                break
            try:
                payload = path.read_bytes()
            except FileNotFoundError:
                continue  # acknowledged or dropped by the bound meanwhile
            if not self._publish_and_wait(self.topic, payload):
                break
            with self._lock:
                if path.exists():  # else its acknowledgement already came
                    self._sent_at[batch_id] = now
                self.resent += last is not None
            awaiting += 1
            sent += 1
        self.sent += sent
        return sent

    def on_ack(self, message: Message) -> None:
        """Handle a `TelemetryAck` from the hub: drop what it stored, set aside what it refused."""
        try:
            ack = decode(TelemetryAck, message.payload, topic=message.topic)
        except ProtocolError as exc:
            log.warning("%s: ignored telemetry acknowledgement: %s", self.device_id, exc)
            return
        if ack.device_id != self.device_id:
            log.warning("%s: ignored telemetry acknowledgement for %s", self.device_id, ack.device_id)
            return
        for batch_id, reason in ack.rejected.items():
            log.warning("%s: hub refused telemetry batch %s: %s", self.device_id, batch_id, reason)
        self.outbox.settle(ack.stored, ack.rejected)
        with self._settled:
            for batch_id in (*ack.stored, *ack.rejected):
                self._sent_at.pop(batch_id, None)
            self.acknowledged += len(ack.stored)
            self.rejected += len(ack.rejected)
            self._settled.notify_all()

    def resend_all(self) -> None:
        """Stop waiting for what awaits an acknowledgement (after a reconnect), so the next flush sends it again
        (counted in ``resent``); it still awaits one until then."""
        with self._lock:
            self._sent_at = dict.fromkeys(self._sent_at, float("-inf"))  # due: never awaited, but sent before

    def wait_settled(self, timeout_s: float) -> bool:
        """Block until nothing sent awaits an acknowledgement; return whether that happened in time."""
        with self._settled:
            return self._settled.wait_for(lambda: not self._sent_at, timeout_s)
