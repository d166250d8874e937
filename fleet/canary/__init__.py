"""Canary analysis: is the new model version worse than the old one on the same kind of devices, now?

The rollout engine calls `analyse_canary` between waves with per-device aggregated metrics of the canary
group (new version) and the baseline group (old version) over the same time window; `device_metrics` turns
telemetry batches into that input (the hub builds it from per-device window sums instead, and pools the
groups' input sketches from per-cohort windows through a `SketchPool`). The device is the sampling unit:
each device contributes one latency and one confidence value, so one busy device cannot outvote the fleet,
and devices are compared within their device class (baseline devices of classes the canary lacks are
dropped; canary devices of classes without a baseline are excluded and reported).

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

The package, one job per module: `config` (`CanaryConfig`, which metrics count), `inputs` (`DeviceMetrics`
from telemetry), `metrics` (one judge per metric), `report` (`MetricResult`, `CanaryReport`), `analysis`
(``analyse_canary``: the verdict). Invalid settings raise pydantic's ``ValidationError``.
"""

from fleet.canary.analysis import analyse_canary
from fleet.canary.config import CanaryConfig, CanaryMetric, MetricSpec
from fleet.canary.inputs import DeviceMetrics, SketchPool, device_metrics
from fleet.canary.report import CanaryReport, MetricResult
from fleet.verdict import Verdict

__all__ = [
    "CanaryConfig",
    "CanaryMetric",
    "CanaryReport",
    "DeviceMetrics",
    "MetricResult",
    "MetricSpec",
    "SketchPool",
    "Verdict",
    "analyse_canary",
    "device_metrics",
]
