"""Canary analysis: is the new model version worse than the old one on the same kind of devices, now?

The rollout engine calls `analyse_canary` between waves with per-device aggregated metrics of the canary
group (new version) and the baseline group (old version) over the same time window; `device_metrics` turns
telemetry batches into that input. The device is the sampling unit: each device contributes one latency and
one confidence value, so one busy device cannot outvote the fleet, and devices are compared within their
device class (baseline devices of classes the canary lacks are dropped; canary devices of classes without a
baseline are excluded and reported).

Metrics, after Kayenta (Mann-Whitney U per metric with an effect size, critical metrics, a score) and Argo
Rollouts (pass / fail / inconclusive):

- ``latency``: per-device mean (or a quantile) latency divided by the median of the baseline devices of
  the same class; one-sided Mann-Whitney U (canary slower), Cliff's delta, relative change of medians.
- ``error_rate``: pooled errors / requests, one-sided two-proportion z-test with the variance inflated
  by the between-device overdispersion (quasi-binomial), since requests on one device are not independent.
- ``confidence``: per-device mean confidence, class-normalised, one-sided Mann-Whitney U (canary lower).
- ``predictions``: distribution of predicted labels, canary against baseline (`fleet.drift` test choice).
- ``shadow_agreement``: share of shadowed requests where the candidate agreed with the active model,
  against a minimum, with a Wilson interval.
- ``drift``: input features of canary devices against baseline devices (pre-processing travels in the
  bundle, so a new version can change them), `fleet.drift` with Benjamini-Hochberg.

A metric fails only when the difference is both significant (``alpha``) and larger than its tolerance.
Missing data, too few devices or requests, or an all-zero baseline make a metric inconclusive, with the
reason; never a silent pass. The verdict: any critical metric failed -> fail; any critical metric
inconclusive -> inconclusive; otherwise the score (weighted share of conclusive metrics that passed, 0-100)
against ``pass_score`` and ``marginal_score``.

Invalid settings raise pydantic's ``ValidationError``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats

from fleet._stats import cliffs_delta_from_u, two_proportion_z, wilson_interval
from fleet.drift import DriftConfig, analyse_drift, compare_counts
from fleet.telemetry import TelemetryAggregate
from fleet.wire.messages import Histogram, TelemetryBatch
from fleet.wire.sketches import deserialize_sketch, histogram_count, histogram_quantile, serialize_sketch

__all__ = [
    "CanaryConfig",
    "CanaryMetric",
    "CanaryReport",
    "DeviceMetrics",
    "MetricResult",
    "MetricSpec",
    "Verdict",
    "analyse_canary",
    "device_metrics",
]


class Verdict(StrEnum):
    """Outcome of a metric or of the whole analysis."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


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


class DeviceMetrics(BaseModel):
    """One device's telemetry summed over the analysis window: the input of `analyse_canary`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    device_class: str
    requests: Annotated[int, Field(ge=0)] = 0
    errors: Annotated[int, Field(ge=0)] = 0
    latency_ms: Histogram | None = None
    confidence: Histogram | None = None
    predictions: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    shadow_compared: Annotated[int, Field(ge=0)] = 0
    shadow_agreed: Annotated[int, Field(ge=0)] = 0
    feature_sketches: dict[str, str] = Field(default_factory=dict)
    window_start: float | None = None
    window_end: float | None = None

    @model_validator(mode="after")
    def _check(self) -> DeviceMetrics:
        if self.errors > self.requests:
            raise ValueError("errors exceed requests")
        if self.shadow_agreed > self.shadow_compared:
            raise ValueError("shadow_agreed exceeds shadow_compared")
        return self

    @classmethod
    def from_aggregate(
        cls, device_id: str, aggregate: TelemetryAggregate, device_class: str | None = None
    ) -> DeviceMetrics:
        """Metrics of one device from its aggregated batches."""
        return cls(
            device_id=device_id,
            device_class=device_class or ",".join(sorted(aggregate.targets)) or "unknown",
            requests=aggregate.requests,
            errors=aggregate.errors,
            latency_ms=aggregate.latency_histogram(),
            confidence=aggregate.confidence_histogram(),
            predictions=dict(aggregate.predictions),
            shadow_compared=aggregate.shadow_compared,
            shadow_agreed=aggregate.shadow_agreed,
            feature_sketches={name: serialize_sketch(sk) for name, sk in aggregate.sketches.items()},
            window_start=aggregate.window_start if math.isfinite(aggregate.window_start) else None,
            window_end=aggregate.window_end if math.isfinite(aggregate.window_end) else None,
        )


def device_metrics(batches: Iterable[TelemetryBatch], *, shadow_candidate: str | None = None) -> list[DeviceMetrics]:
    """Per-device metrics from telemetry batches (one entry per device id, sorted). With
    ``shadow_candidate``, only shadow statistics of that candidate version count."""
    per_device: dict[str, TelemetryAggregate] = {}
    for batch in batches:
        shadow = batch.shadow
        if shadow_candidate is not None and shadow is not None and shadow.candidate_version != shadow_candidate:
            batch = batch.model_copy(update={"shadow": None})
        agg = per_device.get(batch.device_id)
        if agg is None:
            agg = per_device[batch.device_id] = TelemetryAggregate()
        agg.add(batch)
    return [DeviceMetrics.from_aggregate(d, per_device[d]) for d in sorted(per_device)]


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


# -------------------------------------------------------------------------------------------- helpers


def _inconclusive(
    metric: CanaryMetric,
    spec: MetricSpec,
    reason: str,
    *,
    n_canary: int = 0,
    n_baseline: int = 0,
    details: dict[str, float | int | str | None] | None = None,
) -> MetricResult:
    return MetricResult(
        metric=metric,
        verdict=Verdict.INCONCLUSIVE,
        critical=spec.critical,
        weight=spec.weight,
        reason=reason,
        n_canary=n_canary,
        n_baseline=n_baseline,
        details=details or {},
    )


def _latency_value(d: DeviceMetrics, statistic: str) -> float | None:
    if d.latency_ms is None or histogram_count(d.latency_ms) == 0:
        return None
    if statistic == "mean":
        return d.latency_ms.total / histogram_count(d.latency_ms)
    return histogram_quantile(d.latency_ms, int(statistic[1:]) / 100)


def _confidence_value(d: DeviceMetrics, _statistic: str) -> float | None:
    if d.confidence is None or histogram_count(d.confidence) == 0:
        return None
    return d.confidence.total / histogram_count(d.confidence)


def _device_level(
    metric: CanaryMetric,
    canary: Sequence[DeviceMetrics],
    baseline: Sequence[DeviceMetrics],
    config: CanaryConfig,
    *,
    worse: Literal["greater", "less"],
    tolerance: float,
    unit: str,
) -> MetricResult:
    """Mann-Whitney U on one value per device, each divided by its class's baseline median."""
    spec = config.spec(metric)
    value_of = _latency_value if metric == CanaryMetric.LATENCY else _confidence_value

    def values(group: Sequence[DeviceMetrics]) -> list[tuple[str, float]]:
        out = []
        for d in group:
            v = value_of(d, config.latency_statistic) if d.requests >= config.min_requests_per_device else None
            if v is not None and math.isfinite(v):
                out.append((d.device_class, v))
        return out

    can, base = values(canary), values(baseline)
    low = config.min_requests_per_device
    details: dict[str, float | int | str | None] = {
        "low_traffic_canary": sum(1 for d in canary if d.requests < low),
        "low_traffic_baseline": sum(1 for d in baseline if d.requests < low),
    }
    if unit == "ms":
        details["statistic"] = config.latency_statistic
    if not base:
        reason = f"no baseline device has {metric.value} data from >= {low} requests"
        return _inconclusive(metric, spec, reason, details=details)
    if not can:
        reason = f"no canary device has {metric.value} data from >= {low} requests"
        return _inconclusive(metric, spec, reason, details=details)
    by_class: dict[str, list[float]] = defaultdict(list)
    for cls, v in base:
        by_class[cls].append(v)
    medians = {cls: float(np.median(vs)) for cls, vs in by_class.items()}
    zero_classes = sorted(cls for cls, m in medians.items() if m <= 0)
    if len(zero_classes) == len(medians):
        return _inconclusive(
            metric,
            spec,
            f"baseline {metric.value} is zero on every device: telemetry missing or broken",
            n_baseline=len(base),
            details=details,
        )
    can_norm = [v / medians[c] for c, v in can if medians.get(c, 0) > 0]
    base_norm = [v / medians[c] for c, v in base if medians[c] > 0]
    if zero_classes:
        details["zero_baseline_classes"] = ",".join(zero_classes)
    n_c, n_b = len(can_norm), len(base_norm)
    if n_c < config.min_devices or n_b < config.min_devices:
        return _inconclusive(
            metric,
            spec,
            f"needs {config.min_devices} devices per group with >= {config.min_requests_per_device} requests "
            f"(canary {n_c}, baseline {n_b})",
            n_canary=n_c,
            n_baseline=n_b,
            details=details,
        )
    res = stats.mannwhitneyu(can_norm, base_norm, alternative=worse)
    delta = cliffs_delta_from_u(float(res.statistic), n_c, n_b)
    med_c, med_b = float(np.median(can_norm)), float(np.median(base_norm))
    change = med_c / med_b - 1 if med_b else math.nan
    raw_c = float(np.median([v for _, v in can]))
    raw_b = float(np.median([v for _, v in base]))
    p = float(res.pvalue)
    sign = 1 if worse == "greater" else -1
    worse_by = sign * change
    significant = p < config.alpha
    large = sign * delta >= config.min_effect_size and worse_by > tolerance
    verdict = Verdict.FAIL if significant and large else Verdict.PASS
    direction = "higher" if change >= 0 else "lower"
    summary = (
        f"canary {metric.value} {abs(change):.1%} {direction} than baseline (class-normalised median; "
        f"p={p:.3g}, Cliff's delta {delta:+.2f}, {n_c} vs {n_b} devices)"
    )
    if verdict == Verdict.FAIL:
        reason = f"{summary}: worse beyond the {tolerance:.0%} tolerance"
    elif significant and not large:
        reason = f"{summary}: significant but within tolerance"
    else:
        reason = summary
    return MetricResult(
        metric=metric,
        verdict=verdict,
        critical=spec.critical,
        weight=spec.weight,
        reason=reason,
        canary_value=raw_c,
        baseline_value=raw_b,
        relative_change=change,
        p_value=p,
        effect_size=delta,
        n_canary=n_c,
        n_baseline=n_b,
        details=details,
    )


def _overdispersion(groups: Sequence[Sequence[DeviceMetrics]]) -> float:
    """Quasi-binomial dispersion of per-device error counts around each group's pooled rate (>= 1)."""
    chi2, dof = 0.0, 0
    for group in groups:
        devices = [d for d in group if d.requests > 0]
        n = sum(d.requests for d in devices)
        if n == 0 or len(devices) < 2:
            continue
        p = sum(d.errors for d in devices) / n
        if p <= 0 or p >= 1:
            continue
        chi2 += sum((d.errors - d.requests * p) ** 2 / (d.requests * p * (1 - p)) for d in devices)
        dof += len(devices) - 1
    return max(1.0, chi2 / dof) if dof > 0 else 1.0


def _error_rate(
    canary: Sequence[DeviceMetrics], baseline: Sequence[DeviceMetrics], config: CanaryConfig
) -> MetricResult:
    metric, spec = CanaryMetric.ERROR_RATE, config.spec(CanaryMetric.ERROR_RATE)
    n_c, n_b = sum(d.requests for d in canary), sum(d.requests for d in baseline)
    x_c, x_b = sum(d.errors for d in canary), sum(d.errors for d in baseline)
    counts: dict[str, float | int | str | None] = {
        "canary_requests": n_c,
        "baseline_requests": n_b,
        "canary_errors": x_c,
        "baseline_errors": x_b,
    }
    if n_b == 0:
        return _inconclusive(metric, spec, "baseline served no requests: no data", details=counts)
    if n_c < config.min_requests or n_b < config.min_requests:
        return _inconclusive(
            metric,
            spec,
            f"needs {config.min_requests} requests per group (canary {n_c}, baseline {n_b})",
            details=counts,
        )
    rate_c, rate_b = x_c / n_c, x_b / n_b
    if x_c == 0 and x_b == 0:
        upper = wilson_interval(0, n_c, 1 - 2 * config.alpha)[1]
        return MetricResult(
            metric=metric,
            verdict=Verdict.PASS,
            critical=spec.critical,
            weight=spec.weight,
            reason=f"no errors in either group ({n_c} canary, {n_b} baseline requests); "
            f"canary error rate below {upper:.2%} at {1 - config.alpha:.0%} confidence",
            canary_value=0.0,
            baseline_value=0.0,
            relative_change=0.0,
            p_value=1.0,
            n_canary=n_c,
            n_baseline=n_b,
            details=counts,
        )
    phi = _overdispersion([canary, baseline])
    test = two_proportion_z(x_b, n_b, x_c, n_c, alternative="greater", variance_inflation=phi)
    diff = rate_c - rate_b
    significant = test.p_value < config.alpha
    verdict = Verdict.FAIL if significant and diff > config.error_rate_tolerance else Verdict.PASS
    summary = (
        f"canary error rate {rate_c:.3%} vs baseline {rate_b:.3%} (z={test.z:.2f}, p={test.p_value:.3g}, "
        f"overdispersion {phi:.2f})"
    )
    if verdict == Verdict.FAIL:
        reason = f"{summary}: higher beyond the {config.error_rate_tolerance:.2%} tolerance"
    elif significant:
        reason = f"{summary}: significant but within tolerance"
    else:
        reason = summary
    return MetricResult(
        metric=metric,
        verdict=verdict,
        critical=spec.critical,
        weight=spec.weight,
        reason=reason,
        canary_value=rate_c,
        baseline_value=rate_b,
        relative_change=(rate_c / rate_b - 1) if rate_b else None,
        p_value=test.p_value,
        n_canary=n_c,
        n_baseline=n_b,
        details={**counts, "z": test.z, "overdispersion": phi},
    )


def _predictions(
    canary: Sequence[DeviceMetrics], baseline: Sequence[DeviceMetrics], config: CanaryConfig
) -> MetricResult:
    metric, spec = CanaryMetric.PREDICTIONS, config.spec(CanaryMetric.PREDICTIONS)
    can: dict[str, float] = defaultdict(float)
    base: dict[str, float] = defaultdict(float)
    for d in canary:
        for k, v in d.predictions.items():
            can[k] += v
    for d in baseline:
        for k, v in d.predictions.items():
            base[k] += v
    if not sum(base.values()):
        return _inconclusive(metric, spec, "baseline reported no predictions")
    if not sum(can.values()):
        return _inconclusive(metric, spec, "canary reported no predictions")
    res = compare_counts("predictions", base, can, config.drift)
    n_c, n_b = int(res.n_current), int(res.n_reference)
    if res.drifted is None:
        return _inconclusive(metric, spec, f"prediction distribution: {res.detail}", n_canary=n_c, n_baseline=n_b)
    shown = f"{res.test.value}={res.statistic:.4g}" + (f", p={res.p_value:.3g}" if res.p_value is not None else "")
    verdict = Verdict.FAIL if res.drifted else Verdict.PASS
    word = "differs from" if res.drifted else "matches"
    return MetricResult(
        metric=metric,
        verdict=verdict,
        critical=spec.critical,
        weight=spec.weight,
        reason=f"canary prediction distribution {word} baseline ({shown}, threshold {res.threshold:g})",
        canary_value=res.statistic,
        p_value=res.p_value,
        n_canary=n_c,
        n_baseline=n_b,
        details={"test": res.test.value, **res.metrics},
    )


def _shadow(canary: Sequence[DeviceMetrics], baseline: Sequence[DeviceMetrics], config: CanaryConfig) -> MetricResult:
    metric, spec = CanaryMetric.SHADOW_AGREEMENT, config.spec(CanaryMetric.SHADOW_AGREEMENT)
    devices = [d for d in (*canary, *baseline) if d.shadow_compared > 0]
    compared = sum(d.shadow_compared for d in devices)
    agreed = sum(d.shadow_agreed for d in devices)
    if compared < config.min_shadow_compared:
        return _inconclusive(
            metric,
            spec,
            f"needs {config.min_shadow_compared} shadow comparisons, have {compared}",
            details={"compared": compared, "agreed": agreed},
        )
    rate = agreed / compared
    lo, hi = wilson_interval(agreed, compared, 1 - 2 * config.alpha)
    details: dict[str, float | int | str | None] = {
        "compared": compared,
        "agreed": agreed,
        "ci_low": lo,
        "ci_high": hi,
        "devices": len(devices),
    }
    text = f"shadow agreement {rate:.2%} (CI {lo:.2%}-{hi:.2%}, {compared} comparisons) vs minimum "
    text += f"{config.min_agreement:.0%}"
    if hi < config.min_agreement:
        verdict, reason = Verdict.FAIL, f"{text}: significantly below"
    elif rate >= config.min_agreement:
        verdict, reason = Verdict.PASS, text
    else:
        verdict, reason = Verdict.INCONCLUSIVE, f"{text}: below but not significantly"
    return MetricResult(
        metric=metric,
        verdict=verdict,
        critical=spec.critical,
        weight=spec.weight,
        reason=reason,
        canary_value=rate,
        baseline_value=config.min_agreement,
        n_canary=compared,
        details=details,
    )


def _aggregate_sketches(devices: Sequence[DeviceMetrics]) -> TelemetryAggregate:
    agg = TelemetryAggregate()
    for d in devices:
        for name, text in d.feature_sketches.items():
            agg._merge_sketch(name, deserialize_sketch(text))
        agg.devices.add(d.device_id)
    return agg


def _drift(canary: Sequence[DeviceMetrics], baseline: Sequence[DeviceMetrics], config: CanaryConfig) -> MetricResult:
    metric, spec = CanaryMetric.DRIFT, config.spec(CanaryMetric.DRIFT)
    base, can = _aggregate_sketches(baseline), _aggregate_sketches(canary)
    if not base.sketches:
        return _inconclusive(metric, spec, "baseline devices sent no feature sketches")
    if not can.sketches:
        return _inconclusive(metric, spec, "canary devices sent no feature sketches")
    report = analyse_drift(base, {"canary": can}, config.drift)
    cohort = report.cohorts[0]
    if cohort.dataset_drift is None:
        return _inconclusive(metric, spec, "not enough sketched values to test feature drift")
    drifted = [f.feature for f in cohort.features if f.drifted]
    details: dict[str, float | int | str | None] = {
        "tested_features": cohort.tested_features,
        "drifted_features": ",".join(drifted),
    }
    share = cohort.drift_share or 0.0
    verdict = Verdict.FAIL if cohort.dataset_drift else Verdict.PASS
    reason = (
        f"{cohort.drifted_features} of {cohort.tested_features} input features differ between canary and "
        f"baseline ({share:.0%}; drift at {config.drift.drift_share:.0%})"
    )
    return MetricResult(
        metric=metric,
        verdict=verdict,
        critical=spec.critical,
        weight=spec.weight,
        reason=reason,
        canary_value=share,
        n_canary=len(can.devices),
        n_baseline=len(base.devices),
        details=details,
    )


def _window_problem(
    canary: Sequence[DeviceMetrics], baseline: Sequence[DeviceMetrics], config: CanaryConfig
) -> str | None:
    def span(ds: Sequence[DeviceMetrics]) -> tuple[float, float] | None:
        starts = [d.window_start for d in ds if d.window_start is not None]
        ends = [d.window_end for d in ds if d.window_end is not None]
        return (min(starts), max(ends)) if starts and ends else None

    c, b = span(canary), span(baseline)
    if c is None or b is None or c[1] <= c[0]:
        return None
    overlap = max(0.0, min(c[1], b[1]) - max(c[0], b[0])) / (c[1] - c[0])
    if overlap < config.min_window_overlap:
        return (
            f"baseline telemetry covers {overlap:.0%} of the canary's time window "
            f"(needs {config.min_window_overlap:.0%}): not comparable"
        )
    return None


# ---------------------------------------------------------------------------------------------- entry


def analyse_canary(
    canary: Sequence[DeviceMetrics],
    baseline: Sequence[DeviceMetrics],
    config: CanaryConfig = CanaryConfig(),
) -> CanaryReport:
    """Judge the canary group against the baseline group (same window, same device classes).

    Returns a `CanaryReport` whose ``verdict`` is pass, fail or inconclusive, with reasons and per-metric
    results. Never raises for missing or thin data: that is an inconclusive verdict saying why.
    """
    excluded: dict[str, str] = {}
    canary_classes = {d.device_class for d in canary}
    baseline_classes = {d.device_class for d in baseline}
    shared = canary_classes & baseline_classes
    can = [d for d in canary if d.device_class in shared]
    for d in canary:
        if d.device_class not in shared:
            excluded[d.device_id] = f"canary device of class {d.device_class} has no baseline devices of its class"
    base = [d for d in baseline if d.device_class in shared]
    reasons: list[str] = []

    def report(verdict: Verdict, score: float | None, metrics: list[MetricResult]) -> CanaryReport:
        return CanaryReport(
            verdict=verdict,
            score=score,
            reasons=reasons,
            metrics=metrics,
            canary_devices=len(can),
            baseline_devices=len(base),
            device_classes=sorted(shared),
            excluded_devices=excluded,
            config=config,
        )

    if not canary:
        reasons.append("no canary telemetry: nothing to judge")
        return report(Verdict.INCONCLUSIVE, None, [])
    if not baseline:
        reasons.append("no baseline telemetry: nothing to compare the canary with")
        return report(Verdict.INCONCLUSIVE, None, [])
    if not shared:
        reasons.append(
            f"no device class in common (canary {sorted(canary_classes)}, baseline {sorted(baseline_classes)})"
        )
        return report(Verdict.INCONCLUSIVE, None, [])
    window = _window_problem(can, base, config)
    if window:
        reasons.append(window)
        return report(Verdict.INCONCLUSIVE, None, [])

    checks = {
        CanaryMetric.LATENCY: lambda: _device_level(
            CanaryMetric.LATENCY,
            can,
            base,
            config,
            worse="greater",
            tolerance=config.latency_tolerance,
            unit="ms",
        ),
        CanaryMetric.ERROR_RATE: lambda: _error_rate(can, base, config),
        CanaryMetric.CONFIDENCE: lambda: _device_level(
            CanaryMetric.CONFIDENCE,
            can,
            base,
            config,
            worse="less",
            tolerance=config.confidence_tolerance,
            unit="",
        ),
        CanaryMetric.PREDICTIONS: lambda: _predictions(can, base, config),
        CanaryMetric.SHADOW_AGREEMENT: lambda: _shadow(can, base, config),
        CanaryMetric.DRIFT: lambda: _drift(can, base, config),
    }
    results = [run() for metric, run in checks.items() if config.spec(metric).enabled]

    def label(r: MetricResult) -> str:
        return f"{r.metric.value}{' (critical)' if r.critical else ''} {r.verdict.value}: {r.reason}"

    critical_fail = [r for r in results if r.critical and r.verdict == Verdict.FAIL]
    critical_open = [r for r in results if r.critical and r.verdict == Verdict.INCONCLUSIVE]
    conclusive = [r for r in results if r.verdict != Verdict.INCONCLUSIVE]
    total = sum(r.weight for r in conclusive)
    score = 100.0 * sum(r.weight for r in conclusive if r.verdict == Verdict.PASS) / total if total else None
    for r in results:
        if r.verdict != Verdict.PASS:
            reasons.append(label(r))
    if critical_fail:
        verdict = Verdict.FAIL
    elif critical_open:
        verdict = Verdict.INCONCLUSIVE
    elif score is None:
        verdict = Verdict.INCONCLUSIVE
        reasons.append("no metric could be judged")
    elif score >= config.pass_score:
        verdict = Verdict.PASS
        reasons.insert(0, f"score {score:.0f} >= pass score {config.pass_score:g}")
    elif score < config.marginal_score:
        verdict = Verdict.FAIL
        reasons.insert(0, f"score {score:.0f} < marginal score {config.marginal_score:g}")
    else:
        verdict = Verdict.INCONCLUSIVE
        reasons.insert(0, f"score {score:.0f} is marginal ({config.marginal_score:g}-{config.pass_score:g})")
    return report(verdict, score, results)
