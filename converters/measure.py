"""Measure a variant on this host: size, load time, batch-1 latency p50/p99, throughput, peak memory."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from converters.runners import RunnerFn


class _PeakRSS:
    """Samples this process's resident memory every few milliseconds in a background thread."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process(os.getpid())
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def measure(
    load: Callable[[], RunnerFn],
    sample: Mapping[str, np.ndarray],
    *,
    warmup: int = 5,
    max_runs: int = 200,
    budget_s: float = 2.0,
) -> dict[str, Any]:
    """Load once (timed), warm up, then time batch-1 runs until ``max_runs`` or ``budget_s``.

    ``peak_memory_mb`` is the largest increase of this process's RSS over the load and the runs.
    """
    with _PeakRSS() as memory:
        start = time.perf_counter()
        runner = load()
        load_ms = (time.perf_counter() - start) * 1000
        for _ in range(warmup):
            runner(sample)
        timings: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(timings) < max_runs and (len(timings) < 20 or time.perf_counter() < deadline):
            tick = time.perf_counter()
            runner(sample)
            timings.append((time.perf_counter() - tick) * 1000)
    values = np.asarray(timings)
    return {
        "load_time_ms": round(load_ms, 3),
        "latency_ms_p50": round(float(np.percentile(values, 50)), 4),
        "latency_ms_p99": round(float(np.percentile(values, 99)), 4),
        "throughput_per_s": round(1000.0 * len(values) / float(values.sum()), 2),
        "peak_memory_mb": round((memory.peak - memory.baseline) / 2**20, 2),
        "runs": len(values),
    }
