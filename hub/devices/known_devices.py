"""`KnownDevices`: which senders are provisioned, asked of the registry in bulk, at most once per period.

Every device message is checked against the registry (another hub may share the broker; a removed device must
stop counting). Asking the database per message would cost more than the message, so answers are remembered:
a provisioned id for ``ttl_s``, an unknown one for ``unknown_ttl_s`` (so a flood from an unprovisioned id costs
one query per period, not one per message). A device removed through this hub is forgotten at once; other
replicas stop accepting it within ``ttl_s``.

Refresh ahead: a fleet connects within a minute, so its answers expire within a minute, and asking again one
device at a time would cost one query per device per period (at 3,000 devices on three replicas, most of the
message threads' time went there). When an answer has expired, the same query also asks for every answer that
expires within the next ``ttl_s / 2`` for a device heard from within the last two periods (a replica may hear a
device only every heartbeat or two), so the whole fleet is asked again in a few queries of ``_QUERY_IDS`` ids.
The answers of devices not heard from for longer are dropped when they expire.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from hub.registry import Registry

__all__ = ["KnownDevices"]

#: ids per registry query (SQLite's bound-parameter limit, and a statement PostgreSQL plans quickly)
_QUERY_IDS: Final = 500
#: buckets per ``ttl_s``: answers are grouped by expiry so a refresh finds the ones due without a full scan
_BUCKETS_PER_TTL: Final = 16


@dataclass(slots=True)
class _Answer:
    provisioned: bool
    until: float
    bucket: int
    asked_at: float  # when a message of this device was last checked


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
        self._bucket_s = max(ttl_s / _BUCKETS_PER_TTL, 1e-3)
        self._answers: dict[str, _Answer] = {}
        self._buckets: dict[int, set[str]] = {}  # expiry bucket -> ids whose answer expires in it
        self._lock = threading.Lock()
        self._scanned_at = -math.inf

    def provisioned(self, device_ids: Iterable[str]) -> set[str]:
        """Which of ``device_ids`` are provisioned; the ones without a fresh answer cost one query together,
        which also refreshes the answers in use that are about to expire."""
        now = self._clock()
        known: set[str] = set()
        stale: set[str] = set()
        with self._lock:
            for device_id in set(device_ids):
                answer = self._answers.get(device_id)
                if answer is None or answer.until <= now:
                    stale.add(device_id)
                else:
                    answer.asked_at = now
                    if answer.provisioned:
                        known.add(device_id)
            if not stale:
                return known
            asked = stale | self._due_soon(now)
        found: set[str] = set()
        ordered = sorted(asked)
        for start in range(0, len(ordered), _QUERY_IDS):
            found |= self.registry.existing_devices(ordered[start : start + _QUERY_IDS])
        with self._lock:
            for device_id in asked:
                self._remember(device_id, device_id in found, now, asked_at=now if device_id in stale else None)
        return known | (found & stale)

    def is_provisioned(self, device_id: str) -> bool:
        """`provisioned` for one device."""
        return device_id in self.provisioned((device_id,))

    def forget(self, device_id: str) -> None:
        """Drop what is remembered of ``device_id`` (it was removed or provisioned): the next message asks."""
        with self._lock:
            self._drop(device_id)

    def remembered(self) -> int:
        """How many answers are remembered (for tests and metrics)."""
        with self._lock:
            return len(self._answers)

    def _due_soon(self, now: float) -> set[str]:
        """Ids heard from lately whose answers expire within half a period; the expired answers of the others
        are dropped. At most one
        scan per bucket span, so a flood of unknown ids costs one id per query, not a scan per message."""
        if now - self._scanned_at < self._bucket_s:
            return set()
        self._scanned_at = now
        horizon = self._bucket_of(now + self.ttl_s / 2)
        due: set[str] = set()
        for bucket in [b for b in self._buckets if b <= horizon]:
            for device_id in list(self._buckets[bucket]):
                answer = self._answers[device_id]
                if now - answer.asked_at <= 2 * self.ttl_s:
                    due.add(device_id)
                elif answer.until <= now:
                    self._drop(device_id)
        return due

    def _remember(self, device_id: str, provisioned: bool, now: float, *, asked_at: float | None) -> None:
        previous = self._answers.get(device_id)
        if asked_at is None:  # refreshed ahead: keep when it was last heard from
            asked_at = previous.asked_at if previous is not None else now
        self._drop(device_id)
        until = now + (self.ttl_s if provisioned else self.unknown_ttl_s)
        bucket = self._bucket_of(until)
        self._answers[device_id] = _Answer(provisioned, until, bucket, asked_at)
        self._buckets.setdefault(bucket, set()).add(device_id)

    def _drop(self, device_id: str) -> None:
        answer = self._answers.pop(device_id, None)
        if answer is not None:
            ids = self._buckets[answer.bucket]
            ids.discard(device_id)
            if not ids:
                del self._buckets[answer.bucket]

    def _bucket_of(self, at: float) -> int:
        return math.floor(at / self._bucket_s)
