"""One judgement per metric of the canary against the baseline; `JUDGES` lists them in report order.

Each judge returns a `MetricResult`: pass, fail (significant and beyond its tolerance), or inconclusive with
the reason (missing data, too few devices or requests, an all-zero baseline).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
from scipy import stats

from fleet._stats import cliffs_delta_from_u, two_proportion_z, wilson_interval
from fleet.canary.config import CanaryConfig, CanaryMetric, MetricSpec
from fleet.canary.inputs import DeviceMetrics, SketchPool
from fleet.canary.report import MetricResult
from fleet.drift.compare import analyse_drift, compare_counts
from fleet.telemetry import TelemetryAggregate
from fleet.verdict import Verdict
from fleet.wire.sketches import deserialize_sketch, histogram_count, histogram_quantile


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


def _latency_value(device: DeviceMetrics, statistic: str) -> float | None:
    if device.latency_ms is None or histogram_count(device.latency_ms) == 0:
        return None
    if statistic == "mean":
        return device.latency_ms.total / histogram_count(device.latency_ms)
    return histogram_quantile(device.latency_ms, int(statistic[1:]) / 100)


def _confidence_value(device: DeviceMetrics, _statistic: str) -> float | None:
    if device.confidence is None or histogram_count(device.confidence) == 0:
        return None
    return device.confidence.total / histogram_count(device.confidence)


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


def error_rate(
    canary: Sequence[DeviceMetrics], baseline: Sequence[DeviceMetrics], config: CanaryConfig
) -> MetricResult:
    """Pooled error rate, two-proportion z-test inflated by overdispersion: fails when the canary errs more."""
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


def predictions(
    canary: Sequence[DeviceMetrics], baseline: Sequence[DeviceMetrics], config: CanaryConfig
) -> MetricResult:
    """Distribution of predicted labels against the baseline's (`fleet.drift` test choice): fails when it differs."""
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


def shadow_agreement(
    canary: Sequence[DeviceMetrics], baseline: Sequence[DeviceMetrics], config: CanaryConfig
) -> MetricResult:
    """Share of shadowed requests where the candidate agreed with the active model, against ``min_agreement``."""
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


def feature_drift(
    canary: Sequence[DeviceMetrics],
    baseline: Sequence[DeviceMetrics],
    config: CanaryConfig,
    *,
    pools: tuple[SketchPool, SketchPool] | None = None,
) -> MetricResult:
    """Input features of canary devices against baseline devices: fails when the canary's inputs drifted.

    ``pools`` (canary, baseline) pool each group's sketches instead of the devices' own ``feature_sketches``."""
    metric, spec = CanaryMetric.DRIFT, config.spec(CanaryMetric.DRIFT)
    if pools is None:
        base, can = _aggregate_sketches(baseline), _aggregate_sketches(canary)
    else:
        base, can = pools[1](baseline), pools[0](canary)
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


def latency(canary: Sequence[DeviceMetrics], baseline: Sequence[DeviceMetrics], config: CanaryConfig) -> MetricResult:
    """Per-device latency (mean or a quantile), class-normalised: fails when the canary is slower."""
    return _device_level(
        CanaryMetric.LATENCY,
        canary,
        baseline,
        config,
        worse="greater",
        tolerance=config.latency_tolerance,
        unit="ms",
    )


def confidence(
    canary: Sequence[DeviceMetrics], baseline: Sequence[DeviceMetrics], config: CanaryConfig
) -> MetricResult:
    """Per-device mean confidence, class-normalised: fails when the canary is less confident."""
    return _device_level(
        CanaryMetric.CONFIDENCE,
        canary,
        baseline,
        config,
        worse="less",
        tolerance=config.confidence_tolerance,
        unit="",
    )


Judge = Callable[[Sequence[DeviceMetrics], Sequence[DeviceMetrics], CanaryConfig], MetricResult]

#: Every metric's judge, in the order the report lists them.
JUDGES: Mapping[CanaryMetric, Judge] = {
    CanaryMetric.LATENCY: latency,
    CanaryMetric.ERROR_RATE: error_rate,
    CanaryMetric.CONFIDENCE: confidence,
    CanaryMetric.PREDICTIONS: predictions,
    CanaryMetric.SHADOW_AGREEMENT: shadow_agreement,
    CanaryMetric.DRIFT: feature_drift,
}
