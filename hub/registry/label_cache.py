"""The labels of every labelled device, kept in memory for ingestion (`DeviceLabelCache`).

A write of telemetry folds each batch into a window aggregate row per label of its device (as labelled when the
batch is stored), so it needs the labels of thousands of devices per second: a query per write would cost every
write, labelled or not. The cache reads every device's labels at once and again once ``refresh_s`` has passed;
a label change made through this registry drops it at once, one made by another hub worker counts within
``refresh_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from sqlmodel import select

from hub.registry.db import Database
from hub.registry.tables import Device

__all__ = ["DeviceLabelCache"]


class DeviceLabelCache:
    """Labels of the labelled devices, read at once and refreshed every ``refresh_s`` seconds (thread-safe)."""

    def __init__(
        self, database: Database, *, refresh_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = database
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._labels: dict[str, dict[str, str]] = {}
        self._read_at: float | None = None
        self.reads = 0
        """How many times the labels were read from the database."""

    def labels(self) -> Mapping[str, Mapping[str, str]]:
        """Each labelled device's labels (devices without labels are absent), read again when stale."""
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._refresh_s:
                with self._db.session() as session:
                    rows = session.exec(select(Device.id, Device.labels)).all()
                self._labels = {device_id: dict(labels) for device_id, labels in rows if labels}
                self._read_at = now
                self.reads += 1
            return self._labels

    def invalidate(self) -> None:
        """Read the labels again on the next use (a device was provisioned, relabelled or removed)."""
        with self._lock:
            self._read_at = None
