"""`DeviceRecords`: device states and update events written to the registry in batches, off the broker thread.

Every message used to cost one database transaction on the connection's single dispatcher thread (about 20 ms
on a loaded SQLite), so a wave of 1,000 devices ran at the database's pace, not the broker's. Here the
dispatcher only queues; one writer thread takes whatever has queued up within ``gather_s`` (a group commit),
writes the newest state per device and every event in order in one transaction, then tells ``on_events``
(after the commit, so whoever waits on deployment rows sees them). The rollout engine does not depend on these
rows: it follows states and events in memory, in arrival order, from the same decoder.
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


class DeviceRecords:
    """Queues states and events; a writer thread stores them in batches."""

    def __init__(
        self, registry: Registry, *, on_events: Callable[[list[UpdateEvent]], None], gather_s: float = 0.05
    ) -> None:
        self.registry = registry
        self.on_events = on_events
        self.gather_s = gather_s
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="edgefleet-device-records", daemon=True)
        self.batches = 0

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
        while True:
            items = [self._queue.get()]
            # group commit: what arrives within the window joins this transaction (one commit, one short hold of
            # SQLite's single write lock, which the rollout engine's writes wait for)
            deadline = time.monotonic() + self.gather_s
            while len(items) < _MAX_BATCH and items[-1] is not _STOP:
                try:
                    items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            stop = _STOP in items
            self._write([item for item in items if item is not _STOP])
            if stop:
                return

    def _write(self, items: list[object]) -> None:
        states = {i.device_id: i for i in items if isinstance(i, DeviceState)}  # the newest per device
        events = [i for i in items if isinstance(i, UpdateEvent)]
        try:
            self.registry.record_device_reports(list(states.values()), events)
        except Exception:  # the in-memory views still serve; the next state of each device repairs its row
            log.exception("could not store %d device states and %d update events", len(states), len(events))
        self.batches += 1
        if events:
            self.on_events(events)
