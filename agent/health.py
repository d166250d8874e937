"""Health check of a candidate model: golden self-test vectors within tolerance, and the latency budget."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from agent.errors import HealthCheckError
from agent.model import ServableModel
from targets import TARGETS


@dataclass(frozen=True)
class HealthReport:
    """What the health check measured."""

    vectors: int
    max_abs_error: float
    top1_agreement: float
    latency_ms_p50: float
    latency_budget_ms: float | None


def health_check(model: ServableModel, *, latency_repeats: int = 20) -> HealthReport:
    """Run the bundle's self-test; raise `HealthCheckError` with the reason when it fails."""
    manifest = model.manifest
    inputs, expected = model.bundle.selftest_inputs, model.bundle.selftest_outputs
    try:
        outputs = model.raw(inputs)
    except Exception as exc:
        raise HealthCheckError(f"{manifest.model}:{manifest.version} failed to run its self-test: {exc}") from exc
    if outputs.shape != expected.shape:
        raise HealthCheckError(f"self-test output shape {list(outputs.shape)} != expected {list(expected.shape)}")
    outputs32, expected32 = outputs.astype(np.float64), expected.astype(np.float64)
    error = np.abs(outputs32 - expected32)
    tolerance = manifest.selftest.atol + manifest.selftest.rtol * np.abs(expected32)
    agreement = float(
        np.mean(outputs32.reshape(len(outputs32), -1).argmax(1) == expected32.reshape(len(expected32), -1).argmax(1))
    )
    max_error = float(error.max()) if error.size else 0.0
    # Outside the element-wise tolerance is acceptable only for bundles that declare a top-1 agreement
    # floor below 1 (quantised variants), and only when that floor is met.
    if np.any(error > tolerance) and (
        manifest.selftest.min_top1_agreement >= 1.0 or agreement < manifest.selftest.min_top1_agreement
    ):
        raise HealthCheckError(
            f"self-test failed: max abs error {max_error:.3g} exceeds atol {manifest.selftest.atol} + rtol "
            f"{manifest.selftest.rtol}, top-1 agreement {agreement:.3f} "
            f"(floor {manifest.selftest.min_top1_agreement})"
        )
    latencies = []
    single = inputs[:1]
    for _ in range(latency_repeats):
        start = time.perf_counter()
        model.raw(single)
        latencies.append((time.perf_counter() - start) * 1000)
    p50 = float(np.median(latencies))
    target = TARGETS.get(manifest.target)
    budget = target.latency_budget_ms if target else None
    if budget is not None and p50 > budget:
        raise HealthCheckError(f"latency p50 {p50:.1f} ms exceeds {manifest.target}'s budget of {budget:.0f} ms")
    return HealthReport(len(inputs), max_error, agreement, p50, budget)
