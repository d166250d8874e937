"""Building one variant: run a pipeline's steps (source passes, export, artifact passes) through the cache."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters import registry
from converters.cache import digest, toolchain_versions
from converters.onnx_to_torch import needs_torch, torch_source
from converters.pipeline import Pipeline
from converters.plan import VariantPlan
from converters.report import StepRecord
from converters.session import Session
from converters.source import SourceModel
from converters.types import Artifact, StepContext

CALIBRATING_STEPS = ("int8_static", "nncf_ptq")


@dataclass(frozen=True)
class Built:
    """A built artifact, the cache key of its last step and a record per step."""

    artifact: Artifact
    key: str
    records: list[StepRecord]


def build(session: Session, plan: VariantPlan, pipeline: Pipeline) -> Built:
    """Run ``pipeline`` for ``plan.target`` through the step cache."""
    target = plan.target
    records: list[StepRecord] = []
    source = session.source
    source_key = source.digest
    steps = list(pipeline.steps)
    export_at = next(i for i, s in enumerate(steps) if s.kind == "export")
    fused = tuple(s for s in steps[export_at + 1 :] if s.type == "litert_int8")
    if any(needs_torch(s.type) for s in steps[: export_at + 1]):
        source = _torch_source(session, source, target.name)
    for step in steps[:export_at]:
        source_key = digest(
            source_key,
            step.model_dump(),
            toolchain_versions(step.type),
            (session.train or session.calibration).digest,
        )
        cached = session.sources.get(source_key)
        tick = time.perf_counter()
        if cached is None:
            session.notify("step", plan.name, step.type)
            context = _context(session, plan, source, fused)
            cached = registry.load_step(step.type)(step, context).apply(source)
            session.sources[source_key] = cached
        source = cached
        records.append(StepRecord(type=step.type, cached=False, seconds=round(time.perf_counter() - tick, 3)))
    context = _context(session, plan, source, fused)
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
        session.calibration.digest if fused else None,
    )
    artifact = _cached_step(
        session,
        plan,
        key,
        export.type,
        records,
        lambda out: registry.load_step(export.type)(export, context).export(source, target, out),
    )
    for step in steps[export_at + 1 :]:
        if step.type == "litert_int8":  # applied by the exporter while converting
            records.append(StepRecord(type=step.type, cached=records[-1].cached, seconds=0.0))
            continue
        key = digest(
            key,
            step.model_dump(),
            toolchain_versions(step.type),
            session.calibration.digest if step.type in CALIBRATING_STEPS else None,
        )
        artifact = _cached_step(session, plan, key, step.type, records, _pass_runner(step, context, artifact))
    return Built(artifact, key, records)


def _torch_source(session: Session, source: SourceModel, target: str) -> SourceModel:
    """The source as a PyTorch module (ONNX sources through onnx2torch), converted once per run."""
    key = f"torch:{source.digest}"
    if key not in session.sources:
        session.sources[key] = torch_source(source, target=target)
    return session.sources[key]


def _context(session: Session, plan: VariantPlan, source: Any, fused: tuple[Any, ...]) -> StepContext:
    return StepContext(
        target=plan.target,
        source=source,
        calibration=session.calibration,
        train=session.train,
        fused=fused,
        threads=session.threads,
    )


def _pass_runner(step: Any, context: StepContext, parent: Artifact) -> Callable[[Path], Artifact]:
    def produce(out: Path) -> Artifact:
        result: Artifact = registry.load_step(step.type)(step, context).run(parent, out)
        return result

    return produce


def _cached_step(
    session: Session,
    plan: VariantPlan,
    key: str,
    step_type: str,
    records: list[StepRecord],
    produce: Callable[[Path], Artifact],
) -> Artifact:
    tick = time.perf_counter()
    hit = session.cache.get(key)
    if hit is not None:
        records.append(StepRecord(type=step_type, cached=True, seconds=round(time.perf_counter() - tick, 3)))
        session.notify("cached", plan.name, step_type)
        return hit
    session.notify("step", plan.name, step_type)
    out = Path(tempfile.mkdtemp(prefix=f"{step_type}-", dir=session.scratch))
    artifact = produce(out)
    stored = session.cache.put(key, artifact)
    records.append(StepRecord(type=step_type, cached=False, seconds=round(time.perf_counter() - tick, 3)))
    return stored
