"""Accuracy-budget search: the quantization settings to try, and building the best one that fits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from converters import variants
from converters.build import Built, build
from converters.check import budget_for, evaluate, measure_variant, quality_loss
from converters.errors import ConversionError, UnsupportedOperatorError
from converters.pipeline import Pipeline, parse_pipeline
from converters.plan import VariantPlan
from converters.report import SearchReport, Trial, VariantReport
from converters.runners import executable_here
from converters.session import Session

QUANT_STEPS = ("int8_static", "nncf_ptq", "litert_int8")


def search_space(pipeline: Pipeline, max_trials: int) -> list[Pipeline]:
    """Variants of ``pipeline``'s quantization step to try under an accuracy budget, the given one
    first: calibration method, per-channel, and nodes kept in float."""
    config = pipeline.to_config()
    index = next((i for i, step in enumerate(config) if step["type"] in QUANT_STEPS), None)
    if index is None:
        return [pipeline]
    base = config[index]
    variations: list[dict[str, Any]] = []
    if base["type"] == "int8_static":
        # one change at a time first (calibration, granularity, nodes kept in float), then pairs
        methods = [m for m in ("minmax", "entropy", "percentile") if m != base["calibration"]]
        variations += [{"calibration": m} for m in methods]
        variations += [
            {"per_channel": not base["per_channel"]},
            {"exclude_first_last": True},
            {"activation_matmuls": False},
        ]
        variations += [{"calibration": m, "exclude_first_last": True} for m in methods]
        variations += [{"exclude_first_last": True, "activation_matmuls": False}]
    elif base["type"] == "nncf_ptq":
        flipped = not base["transformer"]
        variations += [
            {"ignore_last_layer": True},
            {"transformer": flipped},
            {"preset": "mixed"},
            {"transformer": flipped, "ignore_last_layer": True},
            {"preset": "mixed", "ignore_last_layer": True},
        ]
    else:
        variations = [{"per_channel": True}, {"per_channel": False}]
    candidates = [pipeline]
    seen = {_signature(pipeline)}
    for change in variations:
        steps = [dict(step) for step in config]
        steps[index] = {**base, **change}
        candidate = parse_pipeline(steps)
        if _signature(candidate) not in seen:
            seen.add(_signature(candidate))
            candidates.append(candidate)
    return candidates[:max_trials]


def _signature(pipeline: Pipeline) -> str:
    return json.dumps(pipeline.to_config(), sort_keys=True, default=list)


@dataclass(frozen=True)
class _Best:
    loss: float
    index: int
    built: Built
    metrics: dict[str, Any]
    pipeline: Pipeline


def build_variant(session: Session, plan: VariantPlan) -> VariantReport:
    """Build, check and measure ``plan``'s variant; under a budget, search quantization settings and
    keep the one with the smallest quality loss (copied into the output as soon as it is the best)."""
    searchable = session.budget is not None and any(s.type in QUANT_STEPS for s in plan.pipeline.steps)
    candidates = search_space(plan.pipeline, session.options.max_trials) if searchable else [plan.pipeline]
    directory = variants.destination(session.staging, plan)
    trials: list[Trial] = []
    best: _Best | None = None
    metric_name = "accuracy_drop"
    for index, pipeline in enumerate(candidates):
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
        budget = budget_for(session.budget, metric_name, plan.precision)
        trials.append(
            Trial(
                pipeline=pipeline.to_config(),
                quality_loss=round(loss, 6),
                within_budget=loss <= budget,
                top1_agreement=metrics.get("top1_agreement"),
                accuracy=metrics.get("accuracy"),
                max_abs_error=metrics.get("max_abs_error"),
            )
        )
        if best is None or loss < best.loss:
            best = _Best(loss, index, built, metrics, pipeline)
            variants.save(built.artifact, directory)  # the best found so far is always on disk
        if loss <= 0.0:
            break
    if best is None:
        raise ConversionError(
            f"every quantization setting failed for {plan.name}: {trials[-1].error}",
            target=plan.target.name,
            stage="search",
        )
    budget = budget_for(session.budget, metric_name, plan.precision)
    within = best.loss <= budget
    search = None
    if searchable:
        misses = [i for i, t in enumerate(trials) if t.quality_loss is not None]
        search = SearchReport(
            budget=budget,
            metric=metric_name,
            trials=trials,
            chosen=best.index if within else None,
            closest_miss=None if within else min(misses, key=lambda i: trials[i].quality_loss or 0),
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
