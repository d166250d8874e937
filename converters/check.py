"""Checking and measuring a built variant on this host, with results cached by the artifact's key."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from functools import partial
from typing import Any

from converters.cache import digest
from converters.errors import ExecutionError
from converters.evaluate import ReferenceEvaluator
from converters.measure import WARMUP, measure, measure_isolated
from converters.plan import VariantPlan
from converters.runners import load_runner
from converters.session import Session
from converters.types import Artifact

DEFAULT_BUDGET = 0.01  # one accuracy point, when no max_accuracy_drop is given
# Tolerances on max relative error for outputs that are not classifier logits.
REL_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2, "palettized": 5e-2, "int4": 1e-1}
MEASURE_VERSION = 2  # 2: each variant in its own process


def quality_loss(metrics: Mapping[str, Any], source_accuracy: float | None) -> tuple[str, float]:
    """(metric name, loss): accuracy drop with labels, else top-1 disagreement, else max relative error."""
    if metrics.get("accuracy") is not None and source_accuracy is not None:
        return "accuracy_drop", max(0.0, source_accuracy - metrics["accuracy"])
    if metrics.get("top1_agreement") is not None:
        return "top1_disagreement", 1.0 - metrics["top1_agreement"]
    return "max_rel_error", float(metrics["max_rel_error"])


def budget_for(budget: float | None, metric: str, precision: str) -> float:
    """The allowed quality loss for ``metric`` (``budget`` is the user's max accuracy drop, if any)."""
    if metric == "max_rel_error":
        return REL_TOLERANCE.get(precision, 5e-2) if budget is None else max(budget, 1e-6)
    return DEFAULT_BUDGET if budget is None else budget


def evaluate(session: Session, plan: VariantPlan, artifact: Artifact, key: str) -> dict[str, Any]:
    """Errors, top-1 agreement and accuracy of the variant against the source's reference outputs."""
    cache_key = digest("evaluate", key, session.evaluation.digest, session.source.digest)
    cached = session.cache.get_json(cache_key)
    if cached is not None:
        return cached
    runner = load_runner(plan.target, artifact, session.threads)
    try:
        batch = 64 if artifact.meta.get("batch_dynamic", True) else 1
        metrics = ReferenceEvaluator(batch).evaluate(runner, session.reference, session.evaluation)
    except ExecutionError as exc:
        exc.target = plan.target.name
        raise
    session.cache.put_json(cache_key, metrics)
    return metrics


def measure_variant(session: Session, plan: VariantPlan, artifact: Artifact, key: str) -> dict[str, Any]:
    """Load time, batch-1 latency, throughput and memory of the variant on this host."""
    cache_key = digest("measure", key, MEASURE_VERSION, session.threads, platform.node())
    cached = session.cache.get_json(cache_key)
    if cached is not None:
        return cached
    session.notify("step", plan.name, "measure")
    sample = session.evaluation.sample(0)
    budget_s = session.options.measure_budget_s
    try:
        result = measure_isolated(plan.target, artifact, sample, threads=session.threads, budget_s=budget_s)
        result["measured_in"] = "fresh process"
    except ExecutionError:  # e.g. custom operators registered only in this process
        warmup = WARMUP.get(artifact.format, 5)
        load = partial(load_runner, plan.target, artifact, session.threads)
        result = measure(load, sample, warmup=warmup, budget_s=budget_s)
        result["measured_in"] = "converter process (a fresh process could not load the variant)"
    session.cache.put_json(cache_key, result)
    return result
