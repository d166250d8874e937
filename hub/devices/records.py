"""`DeviceRecords`: device states and update events written to the registry in batches, off the broker thread.

Every message used to cost one database transaction on the connection's single dispatcher thread (about 20 ms
on a loaded SQLite), so a wave of 1,000 devices ran at the database's pace, not the broker's. Here the
dispatcher only queues; one writer thread takes whatever has queued up within ``gather_s`` (a group commit),
writes the newest state per device and every event in order in one transaction, then tells ``on_events``
(after the commit, so whoever waits on deployment rows sees them). The rollout engine does not depend on these
rows: it follows states and events in memory, in arrival order, from the same decoder.

A write that fails (the database restarted, a dropped connection, a full disk) loses nothing: its states and
events are kept and written again with what arrives next, after a delay that doubles up to ``retry_max_s``.
Writing twice is harmless: a state older than the stored one is skipped and events only move a row forward.
At most ``max_pending`` reports wait; past that the oldest events are dropped with a warning (newest states are
kept: each replaces the one before).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from fleet.wire.messages import DeviceState, UpdateEvent
from hub.registry import Registry

__all__ = ["DeviceRecords"]

log = logging.getLogger(__name__)

_STOP = object()
_MAX_BATCH = 1000
_MAX_PENDING = 100_000


class DeviceRecords:
    """Queues states and events; a writer thread stores them in batches."""

    def __init__(
        self,
        registry: Registry,
        *,
        on_events: Callable[[list[UpdateEvent]], None],
        gather_s: float = 0.05,
        retry_first_s: float = 0.1,
        retry_max_s: float = 5.0,
        max_pending: int = _MAX_PENDING,
    ) -> None:
        self.registry = registry
        self.on_events = on_events
        self.gather_s = gather_s
        self.retry_first_s = retry_first_s
        self.retry_max_s = retry_max_s
        self.max_pending = max_pending
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="edgefleet-device-records", daemon=True)
        self.batches = 0
        self.failed_writes = 0

    def start(self) -> None:
        """Start the writer."""
        self._thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, then stop; safe to call twice."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)

    def state(self, state: DeviceState) -> None:
        """Queue a device state (a `DeviceTraffic` state listener)."""
        self._queue.put(state)

    def event(self, event: UpdateEvent) -> None:
        """Queue an update event (a `DeviceTraffic` event listener)."""
        self._queue.put(event)

    def _run(self) -> None:
        pending: list[object] = []  # reports a failed write kept, oldest first
        retry_s = 0.0  # 0: the last write succeeded
        while True:
            items = self._gather(pending, retry_s)
            stop = _STOP in items
            batch = pending + [item for item in items if item is not _STOP]
            if not batch and not stop:
                continue
            if self._write(batch):
                pending, retry_s = [], 0.0
            else:
                pending = self._keep(batch)
                retry_s = min(self.retry_max_s, retry_s * 2) if retry_s else self.retry_first_s
            if stop:
                if pending:
                    log.error(
                        "stopping with %d device reports not stored: the database did not take them", len(pending)
                    )
                return

    def _gather(self, pending: list[object], retry_s: float) -> list[object]:
        """What arrives within ``gather_s`` of the first item (a group commit: one commit, one short hold of
        SQLite's single write lock, which the rollout engine's writes wait for); with reports pending, at most
        ``retry_s`` of waiting for a first item."""
        try:
            items = [self._queue.get(timeout=retry_s) if pending else self._queue.get()]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.gather_s
        while len(items) < _MAX_BATCH and items[-1] is not _STOP:
            try:
                items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return items

    def _keep(self, batch: list[object]) -> list[object]:
        """What to write again: the newest state per device and every event, in order, within ``max_pending``."""
        newest = {i.device_id: index for index, i in enumerate(batch) if isinstance(i, DeviceState)}
        kept = [i for index, i in enumerate(batch) if not isinstance(i, DeviceState) or newest[i.device_id] == index]
        if len(kept) > self.max_pending:
            dropped = len(kept) - self.max_pending
            log.warning("dropping the %d oldest device reports: %d wait for the database", dropped, len(kept))
            kept = kept[dropped:]
        return kept

    def _write(self, items: list[object]) -> bool:
        states = {i.device_id: i for i in items if isinstance(i, DeviceState)}  # the newest per device
        events = [i for i in items if isinstance(i, UpdateEvent)]
        try:
            self.registry.record_device_reports(list(states.values()), events)
        except Exception as exc:  # kept and written again: the in-memory views serve meanwhile
            self.failed_writes += 1
            log.warning(
                "could not store %d device states and %d update events (kept, writing again): %s",
                len(states),
                len(events),
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return False
        self.batches += 1
        if events:
            self.on_events(events)
        return True
