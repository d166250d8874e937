"""Telemetry ingestion: batches from many devices queued and written to the registry in bulk."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from fleet.messages import TelemetryBatch
from hub.registry import Registry

log = logging.getLogger(__name__)
_FLUSH = object()


class TelemetryIngestor:
    """One writer thread; a write covers up to ``max_batch`` messages or whatever arrived in ``linger_s``."""

    def __init__(self, registry: Registry, *, max_batch: int = 500, linger_s: float = 0.2,
                 on_stored: Callable[[list[TelemetryBatch]], None] | None = None) -> None:
        self._registry = registry
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._on_stored = on_stored
        self._queue: queue.Queue[object] = queue.Queue(maxsize=100_000)
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self.received = 0
        self.stored = 0
        self.duplicates = 0
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: TelemetryBatch) -> None:
        """Queue a batch for writing (drops the oldest path is never taken: a full queue blocks the caller)."""
        with self._idle:
            self._pending += 1
        self.received += 1
        self._queue.put(batch)

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until everything submitted so far is written."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout_s)

    def wait_stored(self, at_least: int, timeout_s: float = 10.0) -> bool:
        """Block until at least ``at_least`` new batches were written since start (or the timeout passes)."""
        with self._idle:
            return self._idle.wait_for(lambda: self.stored >= at_least, timeout_s)

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

    def _write(self, batches: list[TelemetryBatch]) -> None:
        if not batches:
            return
        try:
            fresh = self._registry.record_telemetry(batches)
            with self._idle:
                self.stored += fresh
                self.duplicates += len(batches) - fresh
            if self._on_stored is not None and fresh:
                self._on_stored(batches)
        except Exception:
            log.exception("writing %d telemetry batches failed; they are lost on the hub side", len(batches))
        finally:
            with self._idle:
                self._pending -= len(batches)
                self._idle.notify_all()
