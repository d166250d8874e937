"""Accuracy-budget search: the quantization settings to try, and building the best one that fits."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

from converters import variants
from converters.build import Built, build
from converters.check import budget_for, evaluate, measure_variant, quality_loss
from converters.errors import ConversionError, UnsupportedOperatorError
from converters.measure import WARMUP
from converters.pipeline import Pipeline, parse_pipeline
from converters.plan import VariantPlan
from converters.report import SearchReport, Trial, VariantReport
from converters.runners import executable_here, load_runner
from converters.session import Session
from converters.types import Artifact

QUANT_STEPS = ("int8_static", "int8_dynamic", "nncf_ptq", "litert_int8")
TIMING_ROUNDS = 5


def search_space(pipeline: Pipeline, max_trials: int, *, transformer: bool = False) -> list[Pipeline]:
    """Variants of ``pipeline``'s quantization step to try under an accuracy budget, the given one
    first: for a transformer the other int8 schemes (ONNX Runtime dynamic with QAttention, dynamic
    and static MatMul-only, after the pipeline's fusion step; NNCF's transformer scheme; LiteRT
    dynamic range), then calibration method, per-channel, and nodes kept in float."""
    schemes, tunings = _space(pipeline, transformer)
    return (schemes + tunings)[:max_trials]


def _space(pipeline: Pipeline, transformer: bool) -> tuple[list[Pipeline], list[Pipeline]]:
    """(schemes, tunings): schemes trade speed for accuracy differently, so each is tried and the
    fastest within budget kept; tunings rescue accuracy and are tried only while nothing fits."""
    config = pipeline.to_config()
    index = next((i for i, step in enumerate(config) if step["type"] in QUANT_STEPS), None)
    if index is None:
        return [pipeline], []
    base = config[index]
    schemes = [base] + (_transformer_schemes(base) if transformer else [])
    tunings = [{**base, **change} for change in _tunings(base)]
    seen: set[str] = set()
    result: tuple[list[Pipeline], list[Pipeline]] = ([], [])
    for group, steps in zip(result, (schemes, tunings), strict=True):
        for step in steps:
            candidate = parse_pipeline([*config[:index], step, *config[index + 1 :]])
            if _signature(candidate) not in seen:
                seen.add(_signature(candidate))
                group.append(candidate)
    return result


def _transformer_schemes(base: dict[str, Any]) -> list[dict[str, Any]]:
    """The int8 schemes worth timing on a transformer, for the runtime of ``base``'s step."""
    if base["type"] in ("int8_static", "int8_dynamic"):
        matmuls = {"op_types": ("MatMul",)}
        return [  # on a fused graph "all" operators means QAttention, MatMulInteger and int8 embeddings
            {"type": "int8_dynamic", "per_channel": False},
            {"type": "int8_dynamic", "per_channel": True},
            {"type": "int8_dynamic", "per_channel": True, **matmuls},
            {"type": "int8_static", "calibration": "minmax", "per_channel": True, **matmuls},
            {"type": "int8_static", "calibration": "minmax", "per_channel": True},
        ]
    if base["type"] == "nncf_ptq":
        return [{**base, "transformer": True}, {**base, "transformer": False}]
    if base["type"] == "litert_int8" and not base["int8_io"]:
        return [{**base, "mode": "dynamic_range"}, {**base, "mode": "static"}]
    return []


def _tunings(base: dict[str, Any]) -> list[dict[str, Any]]:
    """Single changes first (calibration, granularity, nodes kept in float), then pairs."""
    if base["type"] == "int8_static":
        methods = [m for m in ("minmax", "entropy", "percentile") if m != base["calibration"]]
        return [
            *({"calibration": m} for m in methods),
            {"per_channel": not base["per_channel"]},
            {"exclude_first_last": True},
            {"activation_matmuls": False},
            *({"calibration": m, "exclude_first_last": True} for m in methods),
            {"exclude_first_last": True, "activation_matmuls": False},
        ]
    if base["type"] == "int8_dynamic":
        return [{"per_channel": not base["per_channel"]}, {"op_types": ("MatMul",)}]
    if base["type"] == "nncf_ptq":
        flipped = not base["transformer"]
        return [
            {"ignore_last_layer": True},
            {"transformer": flipped},
            {"preset": "mixed"},
            {"transformer": flipped, "ignore_last_layer": True},
            {"preset": "mixed", "ignore_last_layer": True},
        ]
    return [{"per_channel": True}, {"per_channel": False}]


def _signature(pipeline: Pipeline) -> str:
    return json.dumps(pipeline.to_config(), sort_keys=True, default=list)


@dataclass(frozen=True)
class _Tried:
    index: int
    loss: float
    within: bool
    built: Built
    metrics: dict[str, Any]
    pipeline: Pipeline


def build_variant(session: Session, plan: VariantPlan) -> VariantReport:
    """Build, check and measure ``plan``'s variant. Under a budget, search quantization settings:
    every scheme is tried, tunings only while none fits; of those within budget the fastest (timed
    side by side here) is kept, else the one with the smallest quality loss."""
    searchable = session.budget is not None and any(s.type in QUANT_STEPS for s in plan.pipeline.steps)
    schemes, tunings = _space(plan.pipeline, plan.transformer) if searchable else ([plan.pipeline], [])
    candidates = (schemes + tunings)[: session.options.max_trials]
    directory = variants.destination(session.staging, plan)
    trials: list[Trial] = []
    tried: list[_Tried] = []
    metric_name = "accuracy_drop"
    for index, pipeline in enumerate(candidates):
        if index >= len(schemes) and any(t.within for t in tried):
            break
        try:
            built = build(session, plan, pipeline)
        except UnsupportedOperatorError:
            raise
        except ConversionError as exc:
            if len(candidates) == 1:
                raise
            trials.append(Trial(pipeline=pipeline.to_config(), quality_loss=None, within_budget=None, error=str(exc)))
            continue
        executable, reason = executable_here(plan.target, built.artifact)
        if not executable:
            variants.save(built.artifact, directory)
            return variants.not_executed(
                plan, pipeline, built.artifact, built.records, directory, session.staging, reason
            )
        metrics = evaluate(session, plan, built.artifact, built.key)
        metric_name, loss = quality_loss(metrics, session.source_accuracy)
        within = loss <= budget_for(session.budget, metric_name, plan.precision)
        trials.append(
            Trial(
                pipeline=pipeline.to_config(),
                quality_loss=round(loss, 6),
                within_budget=within,
                top1_agreement=metrics.get("top1_agreement"),
                accuracy=metrics.get("accuracy"),
                max_abs_error=metrics.get("max_abs_error"),
            )
        )
        tried.append(_Tried(len(trials) - 1, loss, within, built, metrics, pipeline))
    if not tried:
        raise ConversionError(
            f"every quantization setting failed for {plan.name}: {trials[-1].error}",
            target=plan.target.name,
            stage="search",
        )
    fitting = [t for t in tried if t.within]
    if len(fitting) > 1:
        latencies = paired_latency_ms(session, plan, [t.built.artifact for t in fitting])
        for candidate, latency in zip(fitting, latencies, strict=True):
            trials[candidate.index].latency_ms_p50 = round(latency, 4)
        best = fitting[latencies.index(min(latencies))]
    else:
        best = fitting[0] if fitting else min(tried, key=lambda t: t.loss)
    variants.save(best.built.artifact, directory)
    budget = budget_for(session.budget, metric_name, plan.precision)
    search = None
    if searchable:
        misses = [i for i, t in enumerate(trials) if t.quality_loss is not None]
        search = SearchReport(
            budget=budget,
            metric=metric_name,
            trials=trials,
            chosen=best.index if best.within else None,
            closest_miss=None if best.within else min(misses, key=lambda i: trials[i].quality_loss or 0),
        )
    return variants.checked(
        plan,
        best.pipeline,
        best.built.artifact,
        best.built.records,
        directory,
        session.staging,
        metrics=best.metrics,
        measured=measure_variant(session, plan, best.built.artifact, best.built.key),
        metric_name=metric_name,
        loss=best.loss,
        budget=budget,
        source_accuracy=session.source_accuracy,
        search=search,
    )


def paired_latency_ms(session: Session, plan: VariantPlan, artifacts: list[Artifact]) -> list[float]:
    """Batch-1 p50 latency of each artifact, timed in alternating rounds in this process so that
    every candidate sees the same load (a shared host's noise would otherwise pick the winner)."""
    runners = [load_runner(plan.target, artifact, session.threads) for artifact in artifacts]
    sample = session.evaluation.sample(0)
    for run in runners:
        for _ in range(WARMUP.get(artifacts[0].format, 5)):
            run(sample)
    slice_s = session.options.measure_budget_s / (TIMING_ROUNDS * len(runners))
    medians: list[list[float]] = [[] for _ in runners]
    for _ in range(TIMING_ROUNDS):
        for run, rounds in zip(runners, medians, strict=True):
            times: list[float] = []
            deadline = time.perf_counter() + slice_s
            while len(times) < 3 or time.perf_counter() < deadline:
                tick = time.perf_counter()
                run(sample)
                times.append((time.perf_counter() - tick) * 1000)
            rounds.append(statistics.median(times))
    return [statistics.median(rounds) for rounds in medians]
