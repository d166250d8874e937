"""Settings of the canary analysis: which metrics count, how much, and the thresholds that judge them."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleet.drift.config import DriftConfig


class CanaryMetric(StrEnum):
    """The metrics a canary is judged on."""

    LATENCY = "latency"
    ERROR_RATE = "error_rate"
    CONFIDENCE = "confidence"
    PREDICTIONS = "predictions"
    SHADOW_AGREEMENT = "shadow_agreement"
    DRIFT = "drift"


class MetricSpec(BaseModel):
    """Whether a metric is used, whether its failure fails the canary, and its weight in the score."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    critical: bool = False
    weight: Annotated[float, Field(gt=0)] = 1.0


DEFAULT_METRICS: Mapping[CanaryMetric, MetricSpec] = {
    CanaryMetric.LATENCY: MetricSpec(critical=True),
    CanaryMetric.ERROR_RATE: MetricSpec(critical=True),
    CanaryMetric.CONFIDENCE: MetricSpec(),
    CanaryMetric.PREDICTIONS: MetricSpec(),
    CanaryMetric.SHADOW_AGREEMENT: MetricSpec(),
    CanaryMetric.DRIFT: MetricSpec(),
}


class CanaryConfig(BaseModel):
    """Thresholds of the canary analysis."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    min_devices: Annotated[int, Field(ge=2)] = 5
    """Per group, for the device-level metrics (latency, confidence)."""
    min_requests_per_device: Annotated[int, Field(ge=1)] = 20
    """A device with fewer requests gives no latency or confidence value (still counts for errors)."""
    min_requests: Annotated[int, Field(ge=1)] = 500
    """Per group, for the error rate."""
    min_shadow_compared: Annotated[int, Field(ge=1)] = 200
    latency_statistic: Literal["mean", "p50", "p90", "p95", "p99"] = "mean"
    """The one latency value per device: the exact mean, or a quantile interpolated in the histogram."""
    latency_tolerance: Annotated[float, Field(ge=0)] = 0.10
    """Relative increase of the class-normalised median device latency that is tolerated."""
    confidence_tolerance: Annotated[float, Field(ge=0)] = 0.05
    """Relative decrease of the class-normalised median device confidence that is tolerated."""
    error_rate_tolerance: Annotated[float, Field(ge=0)] = 0.001
    """Absolute increase of the error rate that is tolerated."""
    min_effect_size: Annotated[float, Field(ge=0, le=1)] = 0.147
    """|Cliff's delta| below this is negligible (Romano et al. 2006) and never fails a metric."""
    min_agreement: Annotated[float, Field(ge=0, le=1)] = 0.90
    min_window_overlap: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Share of the canary's time window the baseline's must cover (when windows are known)."""
    pass_score: Annotated[float, Field(ge=0, le=100)] = 95.0
    marginal_score: Annotated[float, Field(ge=0, le=100)] = 75.0
    metrics: dict[CanaryMetric, MetricSpec] = Field(default_factory=dict)
    """Overrides of `DEFAULT_METRICS` (latency and error rate critical, the rest not)."""
    drift: DriftConfig = DriftConfig()

    @model_validator(mode="after")
    def _check(self) -> CanaryConfig:
        if self.marginal_score > self.pass_score:
            raise ValueError("marginal_score must not exceed pass_score")
        return self

    def spec(self, metric: CanaryMetric) -> MetricSpec:
        """The spec in force for ``metric``."""
        return self.metrics.get(metric, DEFAULT_METRICS[metric])
