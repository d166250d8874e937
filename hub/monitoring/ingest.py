"""Telemetry ingestion: batches from many devices validated at the door, queued and written in bulk.

A batch that fails `fleet.telemetry.validate_batch` is rejected and counted, never queued. Each write stores
the batches whose id is new (`Registry.store_telemetry`); only those reach `FleetMetrics` and the
``on_stored`` callback, duplicates are counted. Every ``prune_interval_s`` the writer folds old raw batches
into rollups (`Registry.prune_telemetry`), so raw telemetry stays bounded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fleet.errors import ProtocolError
from fleet.telemetry import validate_batch
from fleet.wire.messages import TelemetryBatch
from hub.monitoring.metrics import FleetMetrics
from hub.registry import Registry

log = logging.getLogger(__name__)
_FLUSH = object()


@dataclass(frozen=True)
class RetentionPolicy:
    """How much raw telemetry to keep; older or excess batches are folded into rollups of ``window_s``."""

    max_age_s: float | None = 7 * 24 * 3600.0
    max_rows: int | None = 1_000_000
    window_s: float = 3600.0
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
    ) -> None:
        self._registry = registry
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
        self.pruned = 0
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: TelemetryBatch) -> None:
        """Validate and queue a batch for writing (a full queue blocks the caller, nothing is dropped).

        A malformed batch raises `ProtocolError` after being counted as rejected.
        """
        try:
            validate_batch(batch)
        except ProtocolError:
            self.reject()
            raise
        with self._idle:
            self._pending += 1
            self.received += 1
        self._queue.put(batch)

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
        """Fold and delete raw batches beyond the retention policy now; return how many."""
        policy = self._retention
        if policy is None:
            return 0
        with self._prune_lock:
            self._last_prune = time.monotonic()
            pruned = self._registry.prune_telemetry(
                max_age_s=policy.max_age_s, max_rows=policy.max_rows, window_s=policy.window_s
            )
        with self._idle:
            self.pruned += pruned
        return pruned

    def close(self) -> None:
        """Write what is queued and stop the writer."""
        self._stop.set()
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
            log.exception("pruning raw telemetry failed; retried in %.0f s", policy.interval_s)

    def _write(self, batches: list[TelemetryBatch]) -> None:
        if not batches:
            return
        try:
            fresh = self._registry.store_telemetry(batches)
        except Exception:
            log.exception("writing %d telemetry batches failed; they are lost on the hub side", len(batches))
            fresh = None
        if fresh is not None:
            duplicates = len(batches) - len(fresh)
            with self._idle:
                self.stored += len(fresh)
                self.duplicates += duplicates
            try:
                if self._metrics is not None:
                    self._metrics.observe_batches(fresh)
                    if duplicates:
                        self._metrics.count_batches("duplicate", duplicates)
                if self._on_stored is not None and fresh:
                    self._on_stored(fresh)
            except Exception:
                log.exception("observing %d stored telemetry batches failed", len(fresh))
        with self._idle:
            self._pending -= len(batches)
            self._idle.notify_all()
