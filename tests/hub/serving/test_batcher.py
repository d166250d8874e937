"""The dynamic batcher: batches form, preferred sizes, bounded queue, deadlines, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from hub.serving import (
    BackendError,
    BatchingConfig,
    DynamicBatcher,
    InferenceTimeoutError,
    InvalidInputError,
    ModelUnavailableError,
    OverloadedError,
    ServingMetrics,
)
from tests.hub.serving.conftest import GatedBackend, sample


def rows(n: int, start: float = 0.0, width: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + n * width, dtype=np.float32).reshape(n, width)}


def run(
    backend: GatedBackend,
    metrics: ServingMetrics,
    body: Callable[[DynamicBatcher], Awaitable[Any]],
    **config: Any,
) -> Any:
    async def main() -> Any:
        batcher = DynamicBatcher(backend.infer, BatchingConfig(**config), metrics.bind("m", "1"), name="m")
        batcher.start()
        try:
            return await body(batcher)
        finally:
            backend.release.set()
            await batcher.close(grace_s=5)

    return asyncio.run(main())


def test_requests_are_merged_into_one_batch_and_split_back(metrics: ServingMetrics) -> None:
    backend = GatedBackend()

    async def body(b: DynamicBatcher) -> list[dict[str, np.ndarray]]:
        # the batch can only leave when it holds 4 rows (the delay is far longer than the test)
        return await asyncio.gather(*(b.submit(rows(1, start=10 * i)) for i in range(3)), b.submit(rows(1, 99)))

    results = run(backend, metrics, body, max_batch_size=4, max_queue_delay_ms=30_000)
    assert backend.batches == [4]
    for i, out in enumerate(results[:3]):
        np.testing.assert_array_equal(out["y"], rows(1, start=10 * i)["x"] * 2)
    np.testing.assert_array_equal(results[3]["y"], rows(1, 99)["x"] * 2)
    registry = metrics.registry
    assert sample(registry, "edgefleet_serving_batch_size_count", model="m", version="1") == 1
    assert sample(registry, "edgefleet_serving_batch_size_sum", model="m", version="1") == 4
    assert sample(registry, "edgefleet_serving_inferences_total", model="m", version="1") == 4
    assert sample(registry, "edgefleet_serving_queue_duration_seconds_count", model="m", version="1") == 4


def test_multi_row_requests_fill_the_batch_without_exceeding_it(metrics: ServingMetrics) -> None:
    backend = GatedBackend()

    async def body(b: DynamicBatcher) -> list[dict[str, np.ndarray]]:
        requests = [rows(3), rows(2, 100), rows(3, 200), rows(3, 300)]
        return await asyncio.gather(*(b.submit(r) for r in requests))

    results = run(backend, metrics, body, max_batch_size=6, max_queue_delay_ms=30_000)
    # 3 + 2 = 5 rows and the next request (3 rows) does not fit: the first batch leaves as full
    assert backend.batches == [5, 6]
    assert [r["y"].shape[0] for r in results] == [3, 2, 3, 3]
    np.testing.assert_array_equal(results[3]["y"], rows(3, 300)["x"] * 2)
    np.testing.assert_array_equal(results[1]["y"], rows(2, 100)["x"] * 2)


def test_preferred_size_dispatches_without_waiting_for_the_delay(metrics: ServingMetrics) -> None:
    backend = GatedBackend()

    async def body(b: DynamicBatcher) -> None:
        await asyncio.gather(b.submit(rows(1)), b.submit(rows(1)))

    run(backend, metrics, body, max_batch_size=8, preferred_batch_sizes=(2,), max_queue_delay_ms=30_000)
    assert backend.batches == [2]


def test_partial_batch_leaves_after_the_queue_delay(metrics: ServingMetrics) -> None:
    backend = GatedBackend()

    async def body(b: DynamicBatcher) -> dict[str, np.ndarray]:
        return await b.submit(rows(1))

    out = run(backend, metrics, body, max_batch_size=8, max_queue_delay_ms=1)
    assert backend.batches == [1]
    assert out["y"].shape == (1, 2)


def test_requests_with_different_row_shapes_are_not_merged(metrics: ServingMetrics) -> None:
    backend = GatedBackend()

    async def body(b: DynamicBatcher) -> list[dict[str, np.ndarray]]:
        return list(await asyncio.gather(b.submit(rows(1)), b.submit(rows(1, width=3)), b.submit(rows(1))))

    results = run(backend, metrics, body, max_batch_size=2, max_queue_delay_ms=50)
    assert sorted(backend.batches) == [1, 2]
    assert results[1]["y"].shape == (1, 3)


def test_full_queue_is_overloaded_with_a_retry_hint(metrics: ServingMetrics) -> None:
    backend = GatedBackend(gated=True)

    async def body(b: DynamicBatcher) -> None:
        first = asyncio.create_task(b.submit(rows(1)))
        await asyncio.to_thread(backend.entered.wait, 10)  # first request is in the model
        queued = asyncio.create_task(b.submit(rows(1)))
        await asyncio.sleep(0)  # let it enqueue (a scheduling step, not a timing wait)
        assert b.queue_depth == 1
        with pytest.raises(OverloadedError) as err:
            await b.submit(rows(1))
        assert err.value.retry_after >= 1
        backend.release.set()
        await asyncio.gather(first, queued)

    run(backend, metrics, body, max_batch_size=1, max_queue_size=1)
    assert backend.batches == [1, 1]


def test_request_that_waits_too_long_in_the_queue_times_out_and_leaves(metrics: ServingMetrics) -> None:
    backend = GatedBackend()

    async def body(b: DynamicBatcher) -> int:
        with pytest.raises(InferenceTimeoutError):
            await b.submit(rows(1), timeout_s=0.05)
        return b.queue_depth

    depth = run(backend, metrics, body, max_batch_size=4, max_queue_delay_ms=30_000)
    assert depth == 0
    assert backend.batches == []  # never ran
    assert sample(metrics.registry, "edgefleet_serving_queue_depth", model="m", version="1") == 0


def test_request_that_times_out_in_the_model_does_not_poison_the_batcher(metrics: ServingMetrics) -> None:
    backend = GatedBackend(gated=True)

    async def body(b: DynamicBatcher) -> dict[str, np.ndarray]:
        with pytest.raises(InferenceTimeoutError):
            await b.submit(rows(1), timeout_s=0.05)
        backend.release.set()
        return await b.submit(rows(1, 5))

    out = run(backend, metrics, body, max_batch_size=4, max_queue_delay_ms=0)
    np.testing.assert_array_equal(out["y"], rows(1, 5)["x"] * 2)


def test_backend_failure_fails_every_request_of_the_batch(metrics: ServingMetrics) -> None:
    backend = GatedBackend(fail=True)

    async def body(b: DynamicBatcher) -> list[Any]:
        return list(await asyncio.gather(b.submit(rows(1)), b.submit(rows(1)), return_exceptions=True))

    results = run(backend, metrics, body, max_batch_size=2, max_queue_delay_ms=30_000)
    assert [type(r) for r in results] == [BackendError, BackendError]
    assert backend.batches == [2]


@pytest.mark.parametrize(
    "inputs",
    [
        {"x": np.zeros((5, 2), np.float32)},  # more rows than max_batch_size
        {"x": np.zeros((1, 2), np.float32), "z": np.zeros((2, 2), np.float32)},  # rows disagree
        {"x": np.float32(1.0).reshape(())},  # no batch dimension
    ],
)
def test_requests_that_cannot_be_batched_are_invalid(metrics: ServingMetrics, inputs: dict[str, np.ndarray]) -> None:
    async def body(b: DynamicBatcher) -> None:
        with pytest.raises(InvalidInputError):
            await b.submit(inputs)

    run(GatedBackend(), metrics, body, max_batch_size=4)


def test_batching_off_passes_each_request_alone(metrics: ServingMetrics) -> None:
    backend = GatedBackend()

    async def body(b: DynamicBatcher) -> None:
        await asyncio.gather(b.submit(rows(3)), b.submit(rows(3)))

    run(backend, metrics, body, max_batch_size=0)
    assert backend.batches == [3, 3]


def test_closed_batcher_refuses_requests(metrics: ServingMetrics) -> None:
    async def main() -> None:
        b = DynamicBatcher(GatedBackend().infer, BatchingConfig(), metrics.bind("m", "1"))
        b.start()
        await b.close()
        with pytest.raises(ModelUnavailableError):
            await b.submit(rows(1))

    asyncio.run(main())


def test_instances_run_batches_in_parallel(metrics: ServingMetrics) -> None:
    import threading

    both_inside = threading.Barrier(2, timeout=10)  # breaks (and fails the test) unless two run at once
    seen: list[int] = []

    def run_fn(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(inputs["x"].shape[0])
        both_inside.wait()
        return {"y": inputs["x"]}

    async def main() -> None:
        b = DynamicBatcher(run_fn, BatchingConfig(max_batch_size=1, instances=2), metrics.bind("m", "1"))
        b.start()
        try:
            await asyncio.gather(b.submit(rows(1)), b.submit(rows(1)))
        finally:
            await b.close()

    asyncio.run(main())
    assert seen == [1, 1]
