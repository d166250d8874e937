"""Dynamic batching for one model version, after Triton's dynamic batcher.

Requests queue (bounded: a full queue is an :class:`OverloadedError`); a worker per model instance takes
the oldest request plus every later request with the same per-row shapes and dtypes, and dispatches when
the batch reaches ``max_batch_size`` rows or a preferred size, or when the oldest request has waited
``max_queue_delay_ms``. The batch runs in the instance's thread, its outputs are split back by rows.
Each request may carry a deadline; a request that misses it leaves the queue and gets
:class:`InferenceTimeoutError`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from hub.serving.config import BatchingConfig
from hub.serving.errors import (
    BackendError,
    InferenceTimeoutError,
    InvalidInputError,
    ModelUnavailableError,
    OverloadedError,
    ServingError,
)
from hub.serving.metrics import ModelMetrics

Arrays = dict[str, np.ndarray]
RunFn = Callable[[Arrays], Arrays]


@dataclass(eq=False, slots=True)
class _Pending:
    inputs: Arrays
    rows: int
    key: Hashable
    future: asyncio.Future[Arrays]
    enqueued: float = field(default_factory=time.perf_counter)
    taken: bool = False  # left the queue for a batch


class DynamicBatcher:
    """Queue, batch and run requests for one model version. ``start`` inside the serving event loop."""

    def __init__(self, run: RunFn, config: BatchingConfig, metrics: ModelMetrics, *, name: str = "model"):
        self._run = run
        self._config = config
        self._metrics = metrics
        self._name = name
        self._queue: deque[_Pending] = deque()
        self._arrival: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._compute_s = 0.0  # moving average of one batch's compute time

    @property
    def config(self) -> BatchingConfig:
        """The batching configuration."""
        return self._config

    @property
    def queue_depth(self) -> int:
        """Requests waiting (not yet dispatched)."""
        return len(self._queue)

    def start(self) -> None:
        """Start one worker per model instance on the running loop."""
        if self._workers:
            return
        self._arrival = asyncio.Event()
        self._executor = ThreadPoolExecutor(self._config.instances, thread_name_prefix=f"serve-{self._name}")
        self._workers = [
            asyncio.create_task(self._work(self._arrival), name=f"batcher-{self._name}-{i}")
            for i in range(self._config.instances)
        ]

    async def submit(self, inputs: Arrays, timeout_s: float | None = None) -> Arrays:
        """Queue one request and wait for its outputs (at most ``timeout_s`` seconds)."""
        if self._closed or self._arrival is None:
            raise ModelUnavailableError(f"model {self._name!r} is not accepting requests")
        rows, key = self._describe(inputs)
        if len(self._queue) >= self._config.max_queue_size:
            raise OverloadedError(
                f"model {self._name!r} has {len(self._queue)} requests queued",
                retry_after=self._retry_after(),
            )
        item = _Pending(inputs, rows, key, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        self._metrics.queue_depth.inc()
        self._arrival.set()
        try:
            async with asyncio.timeout(timeout_s):
                return await item.future
        except TimeoutError:
            raise InferenceTimeoutError(
                f"model {self._name!r} gave no result within {timeout_s * 1000:.0f} ms"  # type: ignore[operator]
            ) from None
        finally:
            if not item.future.done():
                item.future.cancel()
            self._forget(item)

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop taking requests, finish the queued ones (up to ``grace_s``), then stop the workers."""
        self._closed = True
        if self._arrival is not None:
            self._arrival.set()
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for item in list(self._queue):
            if not item.future.done():
                item.future.set_exception(ModelUnavailableError(f"model {self._name!r} was unloaded"))
        self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._workers = []

    # -- queue --------------------------------------------------------------------------------------

    def _describe(self, inputs: Arrays) -> tuple[int, Hashable]:
        if self._config.max_batch_size == 0:
            return 1, object()  # never merged with another request
        rows = {arr.shape[0] if arr.ndim else -1 for arr in inputs.values()}
        if len(rows) != 1 or -1 in rows:
            raise InvalidInputError("all inputs must share the same first (batch) dimension")
        n = rows.pop()
        if not 1 <= n <= self._config.max_batch_size:
            raise InvalidInputError(f"batch dimension {n} outside 1..{self._config.max_batch_size}")
        key = tuple(sorted((name, arr.dtype.str, arr.shape[1:]) for name, arr in inputs.items()))
        return n, key

    def _forget(self, item: _Pending) -> None:
        if item.taken:
            return
        for i, p in enumerate(self._queue):  # by identity: == on queued items is needlessly slow
            if p is item:
                del self._queue[i]
                break
        else:
            return
        item.taken = True
        self._metrics.queue_depth.dec()
        if self._arrival is not None:
            self._arrival.set()  # the head may have changed

    def _take(self, items: list[_Pending]) -> list[_Pending]:
        for p in items:
            p.taken = True
        if all(a is b for a, b in zip(items, self._queue, strict=False)):
            for _ in items:
                self._queue.popleft()
        else:
            chosen = {id(p) for p in items}
            self._queue = deque(p for p in self._queue if id(p) not in chosen)
        self._metrics.queue_depth.dec(len(items))
        return items

    def _compatible(self, head: _Pending) -> tuple[list[_Pending], list[int], bool]:
        """Requests batchable with ``head`` in arrival order, cumulative rows, and whether it is full."""
        limit = self._config.max_batch_size
        items: list[_Pending] = []
        cum: list[int] = []
        total = 0
        for p in self._queue:
            if p.key != head.key:
                continue
            if total + p.rows > limit:
                return items, cum, True
            total += p.rows
            items.append(p)
            cum.append(total)
            if total == limit:
                return items, cum, True
        return items, cum, False

    async def _next_batch(self, arrival: asyncio.Event) -> list[_Pending] | None:
        delay = self._config.max_queue_delay_ms / 1000.0
        preferred = set(self._config.preferred_batch_sizes)
        while True:
            arrival.clear()
            if not self._queue:
                if self._closed:
                    return None
                await arrival.wait()
                continue
            head = self._queue[0]
            if self._config.max_batch_size == 0:
                return self._take([head])
            items, cum, full = self._compatible(head)
            if full:
                return self._take(items)
            best = max((i for i, rows in enumerate(cum) if rows in preferred), default=None)
            if best is not None:
                return self._take(items[: best + 1])
            wait = head.enqueued + delay - time.perf_counter()
            if wait <= 0 or self._closed:
                return self._take(items)
            try:
                async with asyncio.timeout(wait):
                    await arrival.wait()
            except TimeoutError:
                pass

    # -- execution ----------------------------------------------------------------------------------

    async def _work(self, arrival: asyncio.Event) -> None:
        while (batch := await self._next_batch(arrival)) is not None:
            await self._execute(batch)

    async def _execute(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        for p in batch:
            self._metrics.queue_seconds.observe(started - p.enqueued)
        rows = sum(p.rows for p in batch)
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            inputs = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run, inputs)
            parts = self._split(batch, outputs, rows)
        except asyncio.CancelledError:
            self._fail(batch, ModelUnavailableError(f"model {self._name!r} was unloaded mid-batch"))
            raise
        except ServingError as exc:
            self._fail(batch, exc)
            return
        except Exception as exc:
            self._fail(batch, BackendError(f"model {self._name!r} failed: {exc}"))
            return
        elapsed = time.perf_counter() - started
        self._compute_s = elapsed if self._compute_s == 0.0 else 0.8 * self._compute_s + 0.2 * elapsed
        self._metrics.compute_seconds.observe(elapsed)
        self._metrics.batch_size.observe(rows)
        self._metrics.batches.inc()
        self._metrics.inferences.inc(rows)
        for p, part in zip(batch, parts, strict=True):
            if not p.future.done():
                p.future.set_result(part)

    def _split(self, batch: list[_Pending], outputs: Arrays, rows: int) -> list[Arrays]:
        if self._config.max_batch_size == 0 or len(batch) == 1:
            return [outputs]
        for name, arr in outputs.items():
            if arr.ndim == 0 or arr.shape[0] != rows:
                raise BackendError(f"output {name!r} has shape {arr.shape}, expected {rows} rows")
        parts: list[Arrays] = []
        start = 0
        for p in batch:
            parts.append({name: arr[start : start + p.rows] for name, arr in outputs.items()})
            start += p.rows
        return parts

    @staticmethod
    def _fail(batch: list[_Pending], error: ServingError) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(error)

    def _retry_after(self) -> int:
        per_batch = max(self._config.max_batch_size, 1)
        batches = math.ceil(sum(p.rows for p in self._queue) / per_batch) / self._config.instances
        return max(1, math.ceil(batches * self._compute_s))
