"""The analysis' output: one `MetricResult` per metric and the `CanaryReport` that carries the verdict."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fleet.canary.config import CanaryConfig, CanaryMetric
from fleet.verdict import Verdict


class MetricResult(BaseModel):
    """The judgement of one metric."""

    model_config = ConfigDict(extra="forbid")

    metric: CanaryMetric
    verdict: Verdict
    critical: bool
    weight: float
    reason: str
    canary_value: float | None = None
    baseline_value: float | None = None
    relative_change: float | None = None
    p_value: float | None = None
    effect_size: float | None = None
    """Cliff's delta (canary vs baseline) for device-level metrics."""
    n_canary: int = 0
    n_baseline: int = 0
    details: dict[str, float | int | str | None] = Field(default_factory=dict)


class CanaryReport(BaseModel):
    """The canary verdict with its reasons and every metric; JSON-ready (``model_dump_json``)."""

    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    score: float | None
    reasons: list[str]
    metrics: list[MetricResult]
    canary_devices: int
    baseline_devices: int
    device_classes: list[str]
    excluded_devices: dict[str, str] = Field(default_factory=dict)
    config: CanaryConfig
    skipped_batches: int = 0
    """Stored batches left out because they could not be used (malformed data of some device)."""
