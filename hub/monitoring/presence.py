"""`DevicePresence`: which devices are online, rebuilt from live traffic rather than trusted from stored rows.

A device is online while it is heard from: its retained state (the last will publishes ``online=False``) and its
heartbeats. Heartbeats are only noted in memory as they arrive; every sweep writes them in one transaction,
then marks offline every device silent for ``offline_after_s``. The hub sweeps once at start, before it
subscribes, so a device whose agent died while the hub was down is not listed online from a stale row, and
then every ``interval_s``: a dead device shows offline at most ``offline_after_s + interval_s`` after it was
last heard.
"""

from __future__ import annotations

import logging
import threading
import time

from fleet.wire.messages import Heartbeat
from hub.registry import Registry

__all__ = ["DevicePresence"]

log = logging.getLogger(__name__)


class DevicePresence:
    """Notes heartbeats and sweeps silent devices offline, on its own thread once started."""

    def __init__(self, registry: Registry, *, offline_after_s: float, interval_s: float | None = None) -> None:
        self._registry = registry
        self.offline_after_s = offline_after_s
        self.interval_s = interval_s if interval_s is not None else min(offline_after_s / 3, 30.0)
        self._heard: dict[str, float] = {}
        self._lock = threading.Lock()
        self._swept = threading.Condition(self._lock)
        self.sweeps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def heard(self, beat: Heartbeat) -> None:
        """A device's heartbeat arrived (noted in memory; written by the next sweep)."""
        with self._lock:
            self._heard[beat.device_id] = time.time()

    def sweep(self) -> list[str]:
        """Write the heartbeats heard since the last sweep, then mark silent devices offline; return those."""
        with self._lock:
            heard, self._heard = self._heard, {}
        self._registry.record_heard(heard)
        gone = self._registry.mark_silent_offline(time.time() - self.offline_after_s)
        if gone:
            log.info("devices silent for %.0f s marked offline: %s", self.offline_after_s, ", ".join(gone))
        with self._swept:
            self.sweeps += 1
            self._swept.notify_all()
        return gone

    def wait_sweeps(self, n: int, timeout_s: float) -> bool:
        """Block until ``n`` more sweeps have finished (or ``timeout_s`` passes); return whether they did."""
        with self._swept:
            target = self.sweeps + n
            return self._swept.wait_for(lambda: self.sweeps >= target, timeout_s)

    def start(self) -> None:
        """Sweep every ``interval_s`` on a thread until `stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="device-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sweeping; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except Exception:  # the database may be away for a while; the next sweep catches up
                log.exception("device presence sweep failed")
