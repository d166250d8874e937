"""`convert`: one source model to a checked, measured variant per target, written atomically."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters import registry
from converters.cache import StepCache, digest, distribution_version, toolchain_versions
from converters.data import Dataset, load_npz, synthetic_dataset
from converters.errors import ConversionError, ExecutionError, PipelineConfigError, UnsupportedOperatorError
from converters.evaluate import ReferenceEvaluator, accuracy_of
from converters.measure import measure
from converters.pipeline import Pipeline, parse_pipeline
from converters.plan import QUANT_STEPS, default_pipeline, search_space
from converters.report import (
    ConversionReport,
    DataInfo,
    ErrorInfo,
    SearchReport,
    StepRecord,
    Trial,
    VariantReport,
    tree_sha256,
    write_report,
)
from converters.runners import executable_here, load_runner
from converters.source import SourceModel, from_module, load_source
from converters.types import Artifact, StepContext
from targets import Target, get_target

Progress = Callable[[str, str, str], None]  # (event, variant name, detail)
DEFAULT_BUDGET = 0.01  # one accuracy point, when no --max-accuracy-drop is given
# Tolerances on max relative error for outputs that are not classifier logits.
REL_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2, "palettized": 5e-2, "int4": 1e-1}
MEASURE_VERSION = 1


@dataclass(frozen=True)
class VariantPlan:
    """A target, the precision to build for it and the pipeline that builds it."""

    target: Target
    precision: str
    pipeline: Pipeline

    @property
    def name(self) -> str:
        return f"{self.target.name}/{self.precision}"


@dataclass
class _Run:
    source: SourceModel
    calibration: Dataset
    evaluation: Dataset
    train: Dataset | None
    reference: np.ndarray
    source_accuracy: float | None
    cache: StepCache
    scratch: Path
    staging: Path
    budget: float | None
    threads: int
    max_trials: int
    progress: Progress
    measure_budget_s: float
    sources: dict[str, SourceModel] = field(default_factory=dict)


def plan_variants(
    targets: Sequence[str],
    *,
    precisions: Sequence[str] | None = None,
    pipelines: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    integer_inputs: bool = False,
) -> list[VariantPlan]:
    """The variants to build: each target's precisions (filtered by ``precisions``), with the default
    pipeline unless ``pipelines`` gives one for ``"target"`` or ``"target/precision"``. Every step's
    toolchain is checked before anything heavy is imported (`MissingExtraError`)."""
    plans: list[VariantPlan] = []
    custom = dict(pipelines or {})
    for key in custom:
        if key.split("/")[0] not in targets:
            raise PipelineConfigError(f"pipeline given for {key!r}, which is not among the targets")
    for name in targets:
        target = get_target(name)
        if name in custom:  # one pipeline for the whole target builds one variant
            pipeline = parse_pipeline([dict(step) for step in custom[name]])
            plans.append(VariantPlan(target, pipeline.precision, pipeline))
            continue
        wanted = [p for p in target.precisions if precisions is None or p in precisions]
        if not wanted:
            raise PipelineConfigError(f"{name} supports {', '.join(target.precisions)}; none requested")
        for precision in wanted:
            steps = custom.get(f"{name}/{precision}")
            if steps is not None:
                pipeline = parse_pipeline([dict(step) for step in steps])
                if pipeline.precision != precision:
                    raise PipelineConfigError(
                        f"pipeline for {name}/{precision} produces a {pipeline.precision} variant"
                    )
            else:
                pipeline = default_pipeline(target, precision, integer_inputs=integer_inputs)
            plans.append(VariantPlan(target, precision, pipeline))
    for plan in plans:
        for step in plan.pipeline.steps:
            registry.check_available(step.type)
        runtime_module = registry.RUNTIME_MODULES.get(plan.target.runtime)
        if runtime_module and plan.target.runtime != "coreml" and not registry.module_available(runtime_module):
            raise registry.MissingExtraError(f"{plan.target.runtime} runtime", runtime_module)
    return plans


def _as_dataset(data: Dataset | Path | str | None, names: Sequence[str]) -> Dataset | None:
    if data is None:
        return None
    if isinstance(data, Dataset):
        return data.for_inputs(names)
    return load_npz(Path(data), names)


def convert(
    model: Any,
    targets: Sequence[str],
    out: Path,
    *,
    example_inputs: tuple[Any, ...] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] = ("output",),
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    name: str | None = None,
    calib: Dataset | Path | str | None = None,
    eval: Dataset | Path | str | None = None,
    train: Dataset | Path | str | None = None,
    max_accuracy_drop: float | None = None,
    precisions: Sequence[str] | None = None,
    pipelines: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    cache_dir: Path | None = None,
    keep_going: bool = False,
    threads: int = 2,
    eval_limit: int = 256,
    max_trials: int = 6,
    measure_budget_s: float = 1.0,
    progress: Progress | None = None,
) -> ConversionReport:
    """Convert ``model`` for every target in ``targets`` and write the variants, ``report.json`` and
    ``MODEL_CARD.md`` into ``out``.

    ``model`` is an ``nn.Module`` (with ``example_inputs``), a `SourceModel`, or a path to a ``.pt2``,
    TorchScript or ``.onnx`` file. Data are `Dataset` objects or ``.npz`` paths. Everything is written
    to a temporary sibling of ``out`` and renamed into place at the end, so a failure leaves ``out``
    as it was. Without ``keep_going`` the first failing variant raises (e.g.
    `UnsupportedOperatorError` naming the operator, target and stage); with it, failures are
    recorded in the report and the other variants are still written.
    """
    if max_accuracy_drop is not None and not 0 <= max_accuracy_drop < 1:
        raise PipelineConfigError("max_accuracy_drop is a fraction of accuracy in [0, 1)")
    notify: Progress = progress or (lambda *_: None)
    out = Path(out)
    source = _load(model, example_inputs, input_names, output_names, dynamic_axes, name, calib, eval)
    integer_inputs = any(a.dtype.kind in "iu" for a in source.examples.values())
    plans = plan_variants(targets, precisions=precisions, pipelines=pipelines, integer_inputs=integer_inputs)
    names = source.input_names
    calibration = _as_dataset(calib, names)
    evaluation = _as_dataset(eval, names)
    training = _as_dataset(train, names)
    calibration_data = calibration or evaluation or synthetic_dataset(source.examples, 64)
    evaluation_data = (evaluation or calibration or synthetic_dataset(source.examples, 32, seed=1)).head(eval_limit)
    notify("source", source.name, f"running the source on {len(evaluation_data)} evaluation samples")
    reference = source.reference(evaluation_data)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.work-", dir=out.parent))
    run = _Run(
        source=source,
        calibration=calibration_data,
        evaluation=evaluation_data,
        train=training,
        reference=reference,
        source_accuracy=accuracy_of(reference, evaluation_data.labels),
        cache=StepCache(cache_dir),
        scratch=scratch,
        staging=staging,
        budget=max_accuracy_drop,
        threads=threads,
        max_trials=max_trials,
        progress=notify,
        measure_budget_s=measure_budget_s,
    )
    try:
        variants = []
        for plan in plans:
            notify("start", plan.name, " → ".join(s.type for s in plan.pipeline.steps))
            try:
                variant = _build_variant(run, plan)
            except ConversionError as exc:
                if exc.target is None:
                    exc.target = plan.target.name
                if not keep_going:
                    raise
                variant = _failed(plan, exc)
            variants.append(variant)
            notify("done", plan.name, variant.status)
        report = ConversionReport(
            model=source.name,
            source={
                "kind": source.kind,
                "path": str(source.path) if source.path else None,
                "sha256": source.digest,
                "inputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in source.examples.items()},
                "dynamic_axes": {k: dict(v) for k, v in source.dynamic_axes.items()},
            },
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            host={
                "platform": platform.system(),
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "threads": threads,
            },
            toolchains={
                m: distribution_version(m)
                for m in (
                    "torch",
                    "onnx",
                    "onnxruntime",
                    "openvino",
                    "nncf",
                    "coremltools",
                    "litert_torch",
                    "ai_edge_litert",
                )
            },
            max_accuracy_drop=max_accuracy_drop,
            evaluation=DataInfo(
                origin=evaluation_data.origin,
                samples=len(evaluation_data),
                labels=evaluation_data.labels is not None,
            ),
            calibration=DataInfo(
                origin=calibration_data.origin,
                samples=len(calibration_data),
                labels=calibration_data.labels is not None,
            ),
            source_accuracy=run.source_accuracy,
            variants=variants,
        )
        write_report(report, staging)
        _swap_into_place(staging, out)
        report.root = out.resolve()
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _load(
    model: Any,
    example_inputs: tuple[Any, ...] | None,
    input_names: Sequence[str] | None,
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
    name: str | None,
    calib: Any,
    eval: Any,
) -> SourceModel:
    if isinstance(model, SourceModel):
        return model
    if isinstance(model, (str, Path)):
        path = Path(model)
        probe = None
        for data in (calib, eval):
            if data is not None:
                probe = data if isinstance(data, Dataset) else None
                if probe is None:
                    # input names are unknown before loading: peek at the file's arrays in order
                    with np.load(Path(data)) as archive:
                        arrays = {k: archive[k] for k in archive.files if k not in ("labels", "label", "y")}
                    probe = Dataset(arrays, origin=str(data))
                break
        return load_source(path, examples=probe)
    if example_inputs is None:
        raise ConversionError("converting an nn.Module needs example_inputs")
    return from_module(
        model,
        tuple(example_inputs),
        name=name or type(model).__name__,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
    )


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` with renames only (the old output is removed afterwards)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _failed(plan: VariantPlan, exc: ConversionError) -> VariantReport:
    return VariantReport(
        target=plan.target.name,
        runtime=plan.target.runtime,
        precision=plan.precision,
        status="failed",
        executed=False,
        within_budget=None,
        pipeline=plan.pipeline.to_config(),
        error=ErrorInfo(
            type=type(exc).__name__,
            message=str(exc),
            stage=exc.stage,
            operator=getattr(exc, "operator", None),
        ),
    )


# --- building -----------------------------------------------------------------------------------


def _build(run: _Run, plan: VariantPlan, pipeline: Pipeline) -> tuple[Artifact, str, list[StepRecord]]:
    """Run ``pipeline`` for ``plan.target`` through the cache; returns the artifact, its key, step records."""
    target = plan.target
    records: list[StepRecord] = []
    source = run.source
    source_key = source.digest
    steps = list(pipeline.steps)
    export_at = next(i for i, s in enumerate(steps) if s.kind == "export")
    fused = tuple(s for s in steps[export_at + 1 :] if s.type == "litert_int8")
    context = StepContext(
        target=target,
        source=source,
        calibration=run.calibration,
        train=run.train,
        fused=fused,
        threads=run.threads,
    )
    for step in steps[:export_at]:
        source_key = digest(
            source_key,
            step.model_dump(),
            toolchain_versions(step.type),
            (run.train or run.calibration).digest,
        )
        cached = run.sources.get(source_key)
        tick = time.perf_counter()
        if cached is None:
            run.progress("step", plan.name, step.type)
            cached = registry.load_step(step.type)(step, context).apply(source)
            run.sources[source_key] = cached
        source = cached
        records.append(StepRecord(type=step.type, cached=False, seconds=round(time.perf_counter() - tick, 3)))
    context = StepContext(
        target=target,
        source=source,
        calibration=run.calibration,
        train=run.train,
        fused=fused,
        threads=run.threads,
    )
    export = steps[export_at]
    key = digest(
        "export",
        source.digest,
        {k: [str(v.dtype), list(v.shape)] for k, v in source.examples.items()},
        {k: dict(v) for k, v in source.dynamic_axes.items()},
        source.output_names,
        export.model_dump(),
        toolchain_versions(export.type),
        [f.model_dump() for f in fused],
        run.calibration.digest if fused else None,
    )
    artifact = _cached_step(
        run,
        plan,
        key,
        export.type,
        records,
        lambda out: registry.load_step(export.type)(export, context).export(source, target, out),
    )
    for step in steps[export_at + 1 :]:
        if step.type in ("litert_int8",):
            records.append(StepRecord(type=step.type, cached=records[-1].cached, seconds=0.0))
            continue
        uses_data = step.type in ("int8_static", "nncf_ptq")
        key = digest(
            key,
            step.model_dump(),
            toolchain_versions(step.type),
            run.calibration.digest if uses_data else None,
        )
        parent = artifact
        artifact = _cached_step(
            run,
            plan,
            key,
            step.type,
            records,
            _pass_runner(step, context, parent),
        )
    return artifact, key, records


def _pass_runner(step: Any, context: StepContext, parent: Artifact) -> Callable[[Path], Artifact]:
    def produce(out: Path) -> Artifact:
        result: Artifact = registry.load_step(step.type)(step, context).run(parent, out)
        return result

    return produce


def _cached_step(
    run: _Run,
    plan: VariantPlan,
    key: str,
    step_type: str,
    records: list[StepRecord],
    produce: Callable[[Path], Artifact],
) -> Artifact:
    tick = time.perf_counter()
    hit = run.cache.get(key)
    if hit is not None:
        records.append(StepRecord(type=step_type, cached=True, seconds=round(time.perf_counter() - tick, 3)))
        run.progress("cached", plan.name, step_type)
        return hit
    run.progress("step", plan.name, step_type)
    out = Path(tempfile.mkdtemp(prefix=f"{step_type}-", dir=run.scratch))
    artifact = produce(out)
    stored = run.cache.put(key, artifact)
    records.append(StepRecord(type=step_type, cached=False, seconds=round(time.perf_counter() - tick, 3)))
    return stored


# --- checking, searching and measuring ---------------------------------------------------------


def _quality_loss(metrics: Mapping[str, Any], source_accuracy: float | None) -> tuple[str, float]:
    """(metric name, loss): accuracy drop with labels, else top-1 disagreement, else max relative error."""
    if metrics.get("accuracy") is not None and source_accuracy is not None:
        return "accuracy_drop", max(0.0, source_accuracy - metrics["accuracy"])
    if metrics.get("top1_agreement") is not None:
        return "top1_disagreement", 1.0 - metrics["top1_agreement"]
    return "max_rel_error", float(metrics["max_rel_error"])


def _budget_for(run: _Run, metric: str, precision: str) -> float:
    if metric == "max_rel_error":
        return REL_TOLERANCE.get(precision, 5e-2) if run.budget is None else max(run.budget, 1e-6)
    return DEFAULT_BUDGET if run.budget is None else run.budget


def _evaluate(run: _Run, plan: VariantPlan, artifact: Artifact, key: str) -> dict[str, Any]:
    cache_key = digest("evaluate", key, run.evaluation.digest, run.source.digest)
    cached = run.cache.get_json(cache_key)
    if cached is not None:
        return cached
    runner = load_runner(plan.target, artifact, run.threads)
    try:
        batch = 64 if artifact.meta.get("batch_dynamic", True) else 1
        metrics = ReferenceEvaluator(batch).evaluate(runner, run.reference, run.evaluation)
    except ExecutionError as exc:
        exc.target = plan.target.name
        raise
    run.cache.put_json(cache_key, metrics)
    return metrics


def _measure(run: _Run, plan: VariantPlan, artifact: Artifact, key: str) -> dict[str, Any]:
    cache_key = digest("measure", key, MEASURE_VERSION, run.threads, platform.node())
    cached = run.cache.get_json(cache_key)
    if cached is not None:
        return cached
    run.progress("step", plan.name, "measure")
    sample = run.evaluation.sample(0)
    result = measure(lambda: load_runner(plan.target, artifact, run.threads), sample, budget_s=run.measure_budget_s)
    run.cache.put_json(cache_key, result)
    return result


def _build_variant(run: _Run, plan: VariantPlan) -> VariantReport:
    searchable = run.budget is not None and any(s.type in QUANT_STEPS for s in plan.pipeline.steps)
    candidates = search_space(plan.pipeline, run.max_trials) if searchable else [plan.pipeline]
    destination = run.staging / f"{plan.target.name}-{plan.precision}"
    trials: list[Trial] = []
    best: tuple[float, int, Artifact, str, list[StepRecord], dict[str, Any], Pipeline] | None = None
    metric_name = "accuracy_drop"
    for index, pipeline in enumerate(candidates):
        try:
            artifact, key, records = _build(run, plan, pipeline)
        except UnsupportedOperatorError:
            raise
        except ConversionError as exc:
            if len(candidates) == 1:
                raise
            trials.append(Trial(pipeline=pipeline.to_config(), quality_loss=None, within_budget=None, error=str(exc)))
            continue
        executable, reason = executable_here(plan.target, artifact)
        if not executable:
            _save(artifact, destination)
            return _not_executed(plan, pipeline, artifact, records, destination, reason, run)
        metrics = _evaluate(run, plan, artifact, key)
        metric_name, loss = _quality_loss(metrics, run.source_accuracy)
        budget = _budget_for(run, metric_name, plan.precision)
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
        if best is None or loss < best[0]:
            best = (loss, index, artifact, key, records, metrics, pipeline)
            _save(artifact, destination)  # the best found so far is always on disk
        if loss <= 0.0:
            break
    if best is None:
        raise ConversionError(
            f"every quantization setting failed for {plan.name}: {trials[-1].error}",
            target=plan.target.name,
            stage="search",
        )
    loss, index, artifact, key, records, metrics, pipeline = best
    budget = _budget_for(run, metric_name, plan.precision)
    within = loss <= budget
    measured = _measure(run, plan, artifact, key)
    search = None
    if searchable:
        misses = [i for i, t in enumerate(trials) if t.quality_loss is not None]
        search = SearchReport(
            budget=budget,
            metric=metric_name,
            trials=trials,
            chosen=index if within else None,
            closest_miss=None if within else min(misses, key=lambda i: trials[i].quality_loss or 0),
        )
    accuracy_drop = None
    if metrics.get("accuracy") is not None and run.source_accuracy is not None:
        accuracy_drop = round(run.source_accuracy - metrics["accuracy"], 6)
    return VariantReport(
        target=plan.target.name,
        runtime=plan.target.runtime,
        precision=artifact.precision,
        format=artifact.format,
        path=str((destination / artifact.main).relative_to(run.staging)),
        sha256=tree_sha256(destination / artifact.main),
        size_bytes=_size(destination),
        max_abs_error=metrics["max_abs_error"],
        max_rel_error=metrics["max_rel_error"],
        top1_agreement=metrics.get("top1_agreement"),
        accuracy=metrics.get("accuracy"),
        accuracy_drop=accuracy_drop,
        latency_ms_p50=measured["latency_ms_p50"],
        latency_ms_p99=measured["latency_ms_p99"],
        throughput_per_s=measured["throughput_per_s"],
        load_time_ms=measured["load_time_ms"],
        peak_memory_mb=measured["peak_memory_mb"],
        executed=True,
        within_budget=within,
        status="ok" if within else "out_of_budget",
        reason=None if within else f"{metric_name} {loss:.4g} exceeds the budget {budget:.4g}; closest miss kept",
        pipeline=pipeline.to_config(),
        steps=records,
        search=search,
        meta={
            **dict(artifact.meta),
            "quality_metric": metric_name,
            "quality_loss": round(loss, 6),
            "budget": budget,
            "measured_on": "this host (batch 1)",
        },
    )


def _not_executed(
    plan: VariantPlan,
    pipeline: Pipeline,
    artifact: Artifact,
    records: list[StepRecord],
    destination: Path,
    reason: str,
    run: _Run,
) -> VariantReport:
    return VariantReport(
        target=plan.target.name,
        runtime=plan.target.runtime,
        precision=artifact.precision,
        format=artifact.format,
        path=str((destination / artifact.main).relative_to(run.staging)),
        sha256=tree_sha256(destination / artifact.main),
        size_bytes=_size(destination),
        executed=False,
        within_budget=None,
        status="not_executed",
        reason=reason,
        pipeline=pipeline.to_config(),
        steps=records,
        meta=dict(artifact.meta),
    )


def _save(artifact: Artifact, destination: Path) -> None:
    """Copy the artifact's files into ``destination`` (replacing a previous best)."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for name in artifact.files:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifact.root / name, destination / name)


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
