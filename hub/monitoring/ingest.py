"""Telemetry ingestion: batches from many devices queued, decoded and validated by the writer, written in bulk.

Raw messages (`submit_payload`, what the MQTT dispatcher hands over) are queued undecoded: a decoder thread
decodes them (the ``decode`` callable, `DeviceTraffic.decode_telemetry`, which counts what it refuses) and
validates them into the write queue, so the dispatcher only moves bytes and decoding overlaps the writer's
database round trips. `submit` takes an already decoded batch and validates it
at the call. A batch that fails `fleet.telemetry.validate_batch` is rejected, counted and refused to its
device. Each write stores
the batches whose id is new (`Registry.store_telemetry`); only those reach `FleetMetrics` and the
``on_stored`` callback, duplicates are counted. A write the database refuses is split in halves and retried,
so one batch it cannot store is rejected alone (and counted) and the others are stored; a write that fails
because the database is unreachable stores nothing and acknowledges nothing (devices send those batches
again). After each write, every device gets one `TelemetryAck` naming its batches committed (new or
duplicate) or refused: only then may it delete them. Every ``interval_s`` of the `RetentionPolicy` the
writer deletes old raw batches (already in the window aggregates) and older window aggregates
(`Registry.prune_telemetry`), so stored telemetry stays bounded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from fleet.errors import ProtocolError
from fleet.telemetry import validate_batch
from fleet.wire import topics
from fleet.wire.messages import MAX_ACK_BATCHES, TelemetryAck, TelemetryBatch, encode
from fleet.wire.transport import Broker, Message
from hub.errors import HubError
from hub.monitoring.metrics import FleetMetrics
from hub.registry import Registry

__all__ = ["Acknowledge", "RetentionPolicy", "TelemetryIngestor", "publish_acks"]

log = logging.getLogger(__name__)
_FLUSH = object()
#: The database could not be reached: nothing was stored, and nothing about the batches is known to be wrong.
_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)
Acknowledge = Callable[[TelemetryAck], None]


def publish_acks(broker: Broker) -> Acknowledge:
    """Send each acknowledgement to its device's ``telemetry-ack`` topic (QoS 1, queued while offline)."""

    def acknowledge(ack: TelemetryAck) -> None:
        broker.publish(topics.device_topic(ack.device_id, "telemetry-ack"), encode(ack), qos=1)

    return acknowledge


@dataclass
class _WriteResult:
    fresh: list[TelemetryBatch]
    committed: list[TelemetryBatch]
    refused: dict[str, tuple[TelemetryBatch, str]]
    unstored: int = 0


@dataclass(frozen=True)
class RetentionPolicy:
    """How much telemetry to keep: raw batches by age and count, window aggregates by age (None: no limit)."""

    max_age_s: float | None = 7 * 24 * 3600.0
    max_rows: int | None = 1_000_000
    aggregate_max_age_s: float | None = 90 * 24 * 3600.0
    interval_s: float = 300.0
    """How often the writer prunes; 0 never (another worker does)."""


class TelemetryIngestor:
    """One writer thread; a write covers up to ``max_batch`` messages or whatever arrived in ``linger_s``."""

    def __init__(
        self,
        registry: Registry,
        *,
        max_batch: int = 500,
        linger_s: float = 0.2,
        on_stored: Callable[[list[TelemetryBatch]], None] | None = None,
        metrics: FleetMetrics | None = None,
        retention: RetentionPolicy | None = None,
        acknowledge: Acknowledge | None = None,
        validate: Callable[[TelemetryBatch], None] = validate_batch,
        decode: Callable[[Message], TelemetryBatch] | None = None,
        aggregate_window_s: float = 3600.0,
    ) -> None:
        self._registry = registry
        self._decode = decode
        self._aggregate_window_s = aggregate_window_s
        self._acknowledge = acknowledge
        self._validate = validate
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._on_stored = on_stored
        self._metrics = metrics
        self._retention = retention
        self._last_prune = time.monotonic()
        self._prune_lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=100_000)
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self.received = 0
        self.stored = 0
        self.duplicates = 0
        self.rejected = 0
        self.unstored = 0
        self.pruned = 0
        self._raw: queue.Queue[object] = queue.Queue(maxsize=100_000)
        self._closing = threading.Event()
        self._decoder: threading.Thread | None = None
        if decode is not None:
            self._decoder = threading.Thread(target=self._run_decoder, name="telemetry-decoder", daemon=True)
            self._decoder.start()
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: TelemetryBatch) -> None:
        """Validate and queue a batch for writing (a full queue blocks the caller, nothing is dropped).

        A malformed batch raises `ProtocolError` after being counted as rejected and refused to its device.
        """
        try:
            self._validate(batch)
        except ProtocolError as exc:
            self.reject()
            self._send_acks([], {batch.batch_id: (batch, str(exc))})
            raise
        with self._idle:
            self._pending += 1
            self.received += 1
        self._queue.put(batch)

    def submit_payload(self, message: Message) -> None:
        """Queue a raw telemetry message; the decoder thread decodes and validates it (needs ``decode``)."""
        if self._decoder is None:
            raise TypeError("submit_payload needs the ingestor to be built with decode=")
        with self._idle:
            self._pending += 1
            self.received += 1
        self._raw.put(message)

    def _run_decoder(self) -> None:
        """Decode and validate raw messages into the write queue, while the writer waits on the database."""
        assert self._decode is not None
        while not (self._closing.is_set() and self._raw.empty()):
            try:
                message = self._raw.get(timeout=0.5)
            except queue.Empty:
                continue
            if message is _FLUSH:
                continue
            assert isinstance(message, Message)
            try:
                batch = self._decode(message)
            except (ProtocolError, HubError):  # counted by the decoder's rejection listeners
                self._done(1)
                continue
            try:
                self._validate(batch)
            except ProtocolError as exc:
                log.warning("rejected telemetry: %s", exc)
                self.reject()
                self._done(1)
                try:
                    self._send_acks([], {batch.batch_id: (batch, str(exc))})
                except Exception:
                    log.exception("refusing telemetry batch %s failed", batch.batch_id)
                continue
            self._queue.put(batch)

    def _done(self, n: int) -> None:
        with self._idle:
            self._pending -= n
            self._idle.notify_all()

    def reject(self, n: int = 1) -> None:
        """Count batches refused before the queue (undecodable, from an unknown device, malformed)."""
        with self._idle:
            self.rejected += n
        if self._metrics is not None:
            self._metrics.count_batches("rejected", n)

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until everything submitted so far is written."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout_s)

    def wait_stored(self, at_least: int, timeout_s: float = 10.0) -> bool:
        """Block until at least ``at_least`` new batches were written since start (or the timeout passes)."""
        with self._idle:
            return self._idle.wait_for(lambda: self.stored >= at_least, timeout_s)

    def prune(self) -> int:
        """Delete raw batches and window aggregates beyond the retention policy now; return how many batches."""
        policy = self._retention
        if policy is None:
            return 0
        with self._prune_lock:
            self._last_prune = time.monotonic()
            pruned = self._registry.prune_telemetry(
                max_age_s=policy.max_age_s, max_rows=policy.max_rows, aggregate_max_age_s=policy.aggregate_max_age_s
            )
        with self._idle:
            self.pruned += pruned
        return pruned

    def close(self) -> None:
        """Decode and write what is queued and stop the decoder and the writer."""
        self._closing.set()
        if self._decoder is not None:
            self._raw.put(_FLUSH)
            self._decoder.join(timeout=30)
        self._stop.set()  # only now: the writer stops once the queue is empty, the decoder fills it
        self._queue.put(_FLUSH)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                self._maybe_prune()
                continue
            items = [] if first is _FLUSH else [first]
            try:
                while len(items) < self._max_batch:
                    item = self._queue.get(timeout=self._linger_s)
                    if item is not _FLUSH:
                        items.append(item)
            except queue.Empty:
                pass
            self._write([i for i in items if isinstance(i, TelemetryBatch)])
            self._maybe_prune()

    def _maybe_prune(self) -> None:
        policy = self._retention
        if policy is None or policy.interval_s <= 0 or time.monotonic() - self._last_prune < policy.interval_s:
            return
        try:
            self.prune()
        except Exception:
            log.exception("pruning telemetry failed; retried in %.0f s", policy.interval_s)

    def _write(self, batches: list[TelemetryBatch]) -> None:
        if not batches:
            return
        result = self._store_isolating(batches)
        duplicates = len(result.committed) - len(result.fresh)
        with self._idle:
            self.stored += len(result.fresh)
            self.duplicates += duplicates
            self.unstored += result.unstored
        if result.refused:
            self.reject(len(result.refused))
        try:
            self._send_acks(result.committed, result.refused)
        except Exception:  # devices send these batches again and get the acknowledgement then
            log.exception("acknowledging %d telemetry batches failed", len(result.committed) + len(result.refused))
        try:
            if self._metrics is not None:
                self._metrics.observe_batches(result.fresh)
                if duplicates:
                    self._metrics.count_batches("duplicate", duplicates)
                if result.unstored:
                    self._metrics.count_batches("unstored", result.unstored)
            if self._on_stored is not None and result.fresh:
                self._on_stored(result.fresh)
        except Exception:
            log.exception("observing %d stored telemetry batches failed", len(result.fresh))
        with self._idle:
            self._pending -= len(batches)
            self._idle.notify_all()

    def _store_isolating(self, batches: list[TelemetryBatch]) -> _WriteResult:
        """Store ``batches`` in one write; when the database refuses it, store each half on its own, down to
        the single batch it cannot store, which is refused with the database's reason."""
        try:
            fresh = self._registry.store_telemetry(batches, aggregate_window_s=self._aggregate_window_s)
        except _UNAVAILABLE as exc:
            log.warning("database unavailable, %d telemetry batches not stored (devices resend): %s", len(batches), exc)
            return _WriteResult([], [], {}, unstored=len(batches))
        except Exception as exc:
            if len(batches) == 1:
                reason = f"the database refused the batch: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                log.warning("telemetry batch %s of %s rejected: %s", batches[0].batch_id, batches[0].device_id, reason)
                return _WriteResult([], [], {batches[0].batch_id: (batches[0], reason)})
            half = len(batches) // 2
            first, second = self._store_isolating(batches[:half]), self._store_isolating(batches[half:])
            return _WriteResult(
                first.fresh + second.fresh,
                first.committed + second.committed,
                first.refused | second.refused,
                first.unstored + second.unstored,
            )
        return _WriteResult(fresh, batches, {})

    def _send_acks(self, committed: list[TelemetryBatch], refused: dict[str, tuple[TelemetryBatch, str]]) -> None:
        """One `TelemetryAck` per device (and per `MAX_ACK_BATCHES` ids) for what was committed or refused."""
        if self._acknowledge is None:
            return
        stored: dict[str, list[str]] = {}
        for batch in committed:
            stored.setdefault(batch.device_id, []).append(batch.batch_id)
        rejected: dict[str, dict[str, str]] = {}
        for batch_id, (batch, reason) in refused.items():
            rejected.setdefault(batch.device_id, {})[batch_id] = reason[:500]
        for device_id in stored.keys() | rejected.keys():
            ids = list(dict.fromkeys(stored.get(device_id, [])))
            for start in range(0, max(len(ids), 1), MAX_ACK_BATCHES):
                chunk = ids[start : start + MAX_ACK_BATCHES]
                self._acknowledge(
                    TelemetryAck(
                        device_id=device_id, stored=chunk, rejected=rejected.get(device_id, {}) if start == 0 else {}
                    )
                )
