"""Delays between connection attempts: exponential, capped, with jitter so a fleet does not reconnect in step."""

from __future__ import annotations

import random


class Backoff:
    """ "Equal jitter" backoff: attempt ``n`` waits a uniform time in ``[c/2, c]``, ``c = min(cap, initial * 2**n)``.

    Half the ceiling is always waited (a down broker is never hammered), the other half is random (devices that
    lost the same broker at the same moment come back spread out). The schedule never ends: past the cap every
    delay stays in ``[cap/2, cap]``.
    """

    def __init__(self, initial_s: float = 1.0, cap_s: float = 60.0, *, rng: random.Random | None = None) -> None:
        if not 0 < initial_s <= cap_s:
            raise ValueError(f"backoff needs 0 < initial_s <= cap_s, got {initial_s} and {cap_s}")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self._rng = rng or random.Random()
        self._ceiling = initial_s

    def reset(self) -> None:
        """Start again from ``initial_s`` (after a success)."""
        self._ceiling = self.initial_s

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling up to the cap."""
        ceiling = self._ceiling
        self._ceiling = min(self.cap_s, ceiling * 2)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)
