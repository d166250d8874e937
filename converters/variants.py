"""Writing a variant into the staging directory and describing it as a `VariantReport`."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converters.errors import ConversionError
from converters.pipeline import Pipeline
from converters.plan import VariantPlan
from converters.report import ErrorInfo, SearchReport, StepRecord, VariantReport, tree_sha256
from converters.types import Artifact


def destination(staging: Path, plan: VariantPlan) -> Path:
    """The directory a variant's files go to inside the output."""
    return staging / f"{plan.target.name}-{plan.precision}"


def save(artifact: Artifact, directory: Path) -> None:
    """Copy the artifact's files into ``directory`` (replacing a previous best)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name in artifact.files:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifact.root / name, directory / name)


def files_size(directory: Path) -> int:
    """Bytes of every file of a saved variant (an OpenVINO IR's ``.bin``, a package's tree)."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _written(plan: VariantPlan, artifact: Artifact, directory: Path, staging: Path) -> dict[str, Any]:
    return {
        "target": plan.target.name,
        "runtime": plan.target.runtime,
        "precision": artifact.precision,
        "format": artifact.format,
        "path": str((directory / artifact.main).relative_to(staging)),
        "sha256": tree_sha256(directory / artifact.main),
        "size_bytes": files_size(directory),
    }


def checked(
    plan: VariantPlan,
    pipeline: Pipeline,
    artifact: Artifact,
    records: list[StepRecord],
    directory: Path,
    staging: Path,
    *,
    metrics: Mapping[str, Any],
    measured: Mapping[str, Any],
    metric_name: str,
    loss: float,
    budget: float,
    source_accuracy: float | None,
    search: SearchReport | None,
) -> VariantReport:
    """A variant that ran here: its errors against the source, its measurements and budget verdict."""
    within = loss <= budget
    accuracy_drop = None
    if metrics.get("accuracy") is not None and source_accuracy is not None:
        accuracy_drop = round(source_accuracy - metrics["accuracy"], 6)
    extra = {k: measured[k] for k in ("inference_precision", "measured_in") if k in measured}
    return VariantReport(
        **_written(plan, artifact, directory, staging),
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
            **extra,
            "quality_metric": metric_name,
            "quality_loss": round(loss, 6),
            "budget": budget,
            "measured_on": "this host (batch 1)",
        },
    )


def not_executed(
    plan: VariantPlan,
    pipeline: Pipeline,
    artifact: Artifact,
    records: list[StepRecord],
    directory: Path,
    staging: Path,
    reason: str,
) -> VariantReport:
    """A variant written and hashed but not run: this host cannot execute its runtime."""
    return VariantReport(
        **_written(plan, artifact, directory, staging),
        executed=False,
        within_budget=None,
        status="not_executed",
        reason=reason,
        pipeline=pipeline.to_config(),
        steps=records,
        meta=dict(artifact.meta),
    )


def failed(plan: VariantPlan, exc: ConversionError) -> VariantReport:
    """A variant that could not be built or checked, with the error that stopped it."""
    return VariantReport(
        target=plan.target.name,
        runtime=plan.target.runtime,
        precision=plan.precision,
        status="failed",
        executed=False,
        within_budget=None,
        reason=f"{exc.stage or 'build'}: {exc}",
        pipeline=plan.pipeline.to_config(),
        error=ErrorInfo(
            type=type(exc).__name__,
            message=str(exc),
            stage=exc.stage,
            operator=getattr(exc, "operator", None),
        ),
    )
