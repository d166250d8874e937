"""`KnownDevices`: which senders are provisioned, asked of the registry at most once per device per period.

Every device message is checked against the registry (another hub may share the broker; a removed device must
stop counting). Asking the database per message would cost more than the message, so answers are remembered:
a provisioned id for ``ttl_s``, an unknown one for ``unknown_ttl_s`` (so a flood from an unprovisioned id costs
one query per period, not one per message). A device removed through this hub is forgotten at once; other
replicas stop accepting it within ``ttl_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

from hub.registry import Registry

__all__ = ["KnownDevices"]

#: remembered answers beyond which expired ones are swept (a sweep is O(entries), so it runs rarely)
_SWEEP_ABOVE: Final = 100_000


class KnownDevices:
    """A thread-safe, time-bounded memory of the registry's answer to "is this device provisioned?"."""

    def __init__(
        self,
        registry: Registry,
        *,
        ttl_s: float = 60.0,
        unknown_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self.unknown_ttl_s = unknown_ttl_s
        self._clock = clock
        self._answers: dict[str, tuple[bool, float]] = {}  # device id -> (provisioned, valid until)
        self._lock = threading.Lock()
        self._sweep_at = _SWEEP_ABOVE

    def provisioned(self, device_ids: Iterable[str]) -> set[str]:
        """Which of ``device_ids`` are provisioned; the ones without a fresh answer cost one query together."""
        wanted = set(device_ids)
        now = self._clock()
        known: set[str] = set()
        stale: set[str] = set()
        with self._lock:
            for device_id in wanted:
                answer = self._answers.get(device_id)
                if answer is None or answer[1] <= now:
                    stale.add(device_id)
                elif answer[0]:
                    known.add(device_id)
        if not stale:
            return known
        found = self.registry.existing_devices(stale)
        with self._lock:
            for device_id in stale:
                is_known = device_id in found
                self._answers[device_id] = (is_known, now + (self.ttl_s if is_known else self.unknown_ttl_s))
            if len(self._answers) > self._sweep_at:
                self._sweep(now)
        return known | found

    def is_provisioned(self, device_id: str) -> bool:
        """`provisioned` for one device."""
        return device_id in self.provisioned((device_id,))

    def forget(self, device_id: str) -> None:
        """Drop what is remembered of ``device_id`` (it was removed or provisioned): the next message asks."""
        with self._lock:
            self._answers.pop(device_id, None)

    def _sweep(self, now: float) -> None:
        self._answers = {key: answer for key, answer in self._answers.items() if answer[1] > now}
        self._sweep_at = max(_SWEEP_ABOVE, 2 * len(self._answers))
