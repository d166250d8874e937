"""Failure back-off: after a few failed logins a key (a device id, a client address) is refused for a time that
doubles with each further failure, without checking anything. Memory is bounded: at most ``max_keys`` keys are
kept (the least recently failed are forgotten first) and a key is forgotten ``forget_after_s`` after its last
failure.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class BackoffPolicy(BaseModel):
    """How many failures are free, and how long a key is refused after more."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    free_failures: int = Field(default=5, ge=1, description="failures allowed before any refusal")
    base_s: float = Field(default=1.0, gt=0, description="refusal after the first failure beyond the free ones")
    max_s: float = Field(default=300.0, gt=0, description="longest refusal")
    forget_after_s: float = Field(default=900.0, gt=0, description="failures are forgotten this long after the last")
    max_keys: int = Field(default=10_000, ge=1, description="keys tracked at most")


@dataclass
class _Failures:
    count: int
    last_at: float
    blocked_until: float


class FailureBackoff:
    """Failure counts per key under one `BackoffPolicy`; thread-safe."""

    def __init__(self, policy: BackoffPolicy, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self._clock = clock
        self._keys: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Seconds ``key`` is still refused for (0: it may try now)."""
        now = self._clock()
        with self._lock:
            entry = self._live(key, now)
            return max(0.0, entry.blocked_until - now) if entry else 0.0

    def failed(self, key: str) -> None:
        """Count a failure of ``key``; beyond the free ones, refuse it for a doubling time."""
        now = self._clock()
        policy = self.policy
        with self._lock:
            entry = self._live(key, now) or _Failures(0, now, now)
            entry.count += 1
            entry.last_at = now
            beyond = entry.count - policy.free_failures
            if beyond > 0:
                entry.blocked_until = now + min(policy.max_s, policy.base_s * 2 ** min(beyond - 1, 32))
            self._keys[key] = entry
            self._keys.move_to_end(key)
            while len(self._keys) > policy.max_keys:
                self._keys.popitem(last=False)

    def succeeded(self, key: str) -> None:
        """Forget ``key``'s failures."""
        with self._lock:
            self._keys.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def _live(self, key: str, now: float) -> _Failures | None:
        entry = self._keys.get(key)
        if entry is not None and now - entry.last_at > self.policy.forget_after_s and now >= entry.blocked_until:
            del self._keys[key]
            return None
        return entry
