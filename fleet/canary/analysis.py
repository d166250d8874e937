"""`analyse_canary`: compare like with like (device classes, time windows), run every enabled judge, and
turn the per-metric results into one verdict with its reasons and score."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from fleet.canary.config import CanaryConfig, CanaryMetric
from fleet.canary.inputs import DeviceMetrics, SketchPool
from fleet.canary.metrics import JUDGES, Judge, feature_drift
from fleet.canary.report import CanaryReport, MetricResult
from fleet.verdict import Verdict


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


def analyse_canary(
    canary: Sequence[DeviceMetrics],
    baseline: Sequence[DeviceMetrics],
    config: CanaryConfig = CanaryConfig(),
    *,
    sketch_pools: tuple[SketchPool, SketchPool] | None = None,
) -> CanaryReport:
    """Judge the canary group against the baseline group (same window, same device classes).

    Returns a `CanaryReport` whose ``verdict`` is pass, fail or inconclusive, with reasons and per-metric
    results. Never raises for missing or thin data: that is an inconclusive verdict saying why. With
    ``sketch_pools`` (canary, baseline), input drift pools each group's sketches through them (given the
    devices compared) instead of from each device's ``feature_sketches``.
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

    judges: dict[CanaryMetric, Judge] = dict(JUDGES)
    if sketch_pools is not None:
        judges[CanaryMetric.DRIFT] = partial(feature_drift, pools=sketch_pools)
    results = [judge(can, base, config) for metric, judge in judges.items() if config.spec(metric).enabled]

    def label(result: MetricResult) -> str:
        return (
            f"{result.metric.value}{' (critical)' if result.critical else ''} {result.verdict.value}: {result.reason}"
        )

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
