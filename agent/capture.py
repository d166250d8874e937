"""Opt-in capture of sampled live inputs for retraining, off unless the device's config sets a rate.

Each answered row is kept with probability ``rate`` (one vectorised draw per request), at most
``max_per_hour`` rows per clock hour. Kept rows wait in memory until the telemetry cycle spools them to disk
as `CaptureBatch` files (each well under the 512 KiB message limit), bounded by ``max_bytes`` (the oldest are
dropped first, and counted), and then sent on the device's ``capture`` topic, each file deleted once the
broker acknowledged it. Nothing is captured while ``rate`` is 0, the default; a row the wire cannot carry
(a label over 128 characters) is counted in ``dropped``, never raised into serving.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from fleet.wire import topics
from fleet.wire.messages import CaptureBatch, CapturedSample

log = logging.getLogger(__name__)
#: Bytes of samples per capture message, leaving room under the 512 KiB wire limit for the envelope.
MESSAGE_BUDGET_BYTES = 256 * 1024


class InputCapture:
    """Samples rows on the request path and keeps them on disk until sent."""

    def __init__(
        self,
        directory: Path,
        device_id: str,
        target: str,
        *,
        rate: float,
        max_per_hour: int,
        max_bytes: int,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.device_id = device_id
        self.target = target
        self.rate = rate
        self.max_per_hour = max_per_hour
        self.max_bytes = max_bytes
        self._rng = np.random.default_rng((rng or random.Random()).getrandbits(64))
        self._clock = clock
        self._lock = threading.Lock()
        self._hour = -1
        self._taken_this_hour = 0
        self._pending: dict[tuple[str, str, tuple[int, ...]], list[CapturedSample]] = {}
        self.dropped = 0
        self.topic = topics.device_topic(device_id, "capture")

    def offer(self, model: str, version: str, inputs: np.ndarray, labels: list[str], confidences: list[float]) -> int:
        """Keep a sampled share of a request's rows (with their answers); return how many were kept."""
        rows = len(labels)
        chosen = np.flatnonzero(self._rng.random(rows) < self.rate)
        if chosen.size == 0:
            return 0
        now = self._clock()
        with self._lock:
            hour = int(now // 3600)
            if hour != self._hour:
                self._hour, self._taken_this_hour = hour, 0
            chosen = chosen[: max(0, self.max_per_hour - self._taken_this_hour)]
            self._taken_this_hour += len(chosen)
            flat = np.asarray(inputs, dtype=np.float64).reshape(rows, -1)
            key = (model, version, tuple(int(d) for d in np.shape(inputs)[1:]))
            try:
                samples = [
                    CapturedSample(ts=now, input=flat[i].tolist(), label=labels[i], confidence=float(confidences[i]))
                    for i in chosen
                ]
            except ValidationError:  # a row the wire cannot carry is not kept; capture never fails a request
                self.dropped += len(chosen)
                return 0
            self._pending.setdefault(key, []).extend(samples)
        return len(chosen)

    def spool(self) -> int:
        """Write kept rows to disk as capture messages; drop the oldest files beyond ``max_bytes``."""
        with self._lock:
            pending, self._pending = self._pending, {}
        written = 0
        for (model, version, shape), samples in pending.items():
            for chunk in _chunks(samples):
                batch = CaptureBatch(
                    batch_id=uuid.uuid4().hex,
                    device_id=self.device_id,
                    target=self.target,
                    model=model,
                    version=version,
                    shape=list(shape) or [1],
                    samples=chunk,
                )
                path = self.directory / f"{time.time_ns():020d}-{batch.batch_id}.json"
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(batch.model_dump_json().encode())
                os.replace(tmp, path)
                written += 1
        self._bound()
        return written

    def _bound(self) -> None:
        files = sorted(self.directory.glob("*.json"))
        total = sum(f.stat().st_size for f in files)
        for old in files:
            if total <= self.max_bytes:
                break
            total -= old.stat().st_size
            old.unlink(missing_ok=True)
            self.dropped += 1

    def pending(self) -> list[Path]:
        """Spooled capture files, oldest first."""
        return sorted(self.directory.glob("*.json"))

    def send(self, publish_and_wait: Callable[[str, bytes], bool]) -> int:
        """Send spooled files, oldest first; stop at the first the broker does not acknowledge."""
        sent = 0
        for path in self.pending():
            try:
                payload = path.read_bytes()
            except FileNotFoundError:
                continue
            if not publish_and_wait(self.topic, payload):
                break
            path.unlink(missing_ok=True)
            sent += 1
        return sent


def _chunks(samples: list[CapturedSample]) -> list[list[CapturedSample]]:
    """Split samples into groups whose JSON stays within `MESSAGE_BUDGET_BYTES`."""
    out: list[list[CapturedSample]] = [[]]
    used = 0
    for sample in samples:
        size = len(sample.model_dump_json())
        if out[-1] and used + size > MESSAGE_BUDGET_BYTES:
            out.append([])
            used = 0
        out[-1].append(sample)
        used += size
    return out
