"""Choosing a test per feature and running it: one feature (`compare_sketches`, `compare_counts`), one
cohort (`compare_aggregates`), and a whole report with Benjamini-Hochberg (`analyse_drift`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from datasketches import kll_floats_sketch

from fleet._stats import benjamini_hochberg
from fleet.drift.config import NUMERICAL_ONLY_TESTS, DriftConfig, DriftTest, FeatureKind
from fleet.drift.report import CohortDrift, DriftReport, FeatureDrift
from fleet.drift.statistics import (
    aligned_counts,
    category_counts,
    chi_square_counts,
    jensen_shannon_counts,
    jensen_shannon_sketches,
    ks_sketches,
    psi_counts,
    psi_sketches,
    wasserstein_sketches,
    z_test_counts,
)
from fleet.telemetry import ReferenceProfile, TelemetryAggregate
from fleet.wire.messages import Histogram
from fleet.wire.sketches import sketch_items

#: The names under which predictions and confidence appear among a cohort's results.
PREDICTIONS = "__predictions__"
CONFIDENCE = "__confidence__"


def _default_test(kind: FeatureKind, n_reference: float, n_unique: int, config: DriftConfig) -> DriftTest:
    categorical = kind == FeatureKind.CATEGORICAL or n_unique <= config.categorical_max_unique
    if n_reference <= config.small_sample_max:
        if categorical:
            return DriftTest.Z if n_unique <= 2 else DriftTest.CHI_SQUARE
        return DriftTest.KS
    return DriftTest.JENSEN_SHANNON if categorical else DriftTest.WASSERSTEIN


def _choose(
    name: str,
    kind: FeatureKind,
    n_reference: float,
    n_unique: int,
    config: DriftConfig,
    forced: DriftTest | None,
) -> DriftTest:
    default = _default_test(kind, n_reference, n_unique, config)
    chosen = forced or default
    if chosen in NUMERICAL_ONLY_TESTS and kind == FeatureKind.CATEGORICAL:
        return default
    return chosen


def _new_result(
    name: str, kind: FeatureKind, test: DriftTest, n_ref: float, n_cur: float, config: DriftConfig
) -> FeatureDrift:
    """An empty result for one feature: ``ok`` to be filled in, or ``insufficient_data`` with the reason."""
    short = min(n_ref, n_cur) < config.min_samples
    return FeatureDrift(
        feature=name,
        kind=kind,
        test=test,
        status="insufficient_data" if short else "ok",
        threshold=config.threshold(test),
        n_reference=n_ref,
        n_current=n_cur,
        detail=f"needs at least {config.min_samples} values on each side (reference {n_ref:g}, current {n_cur:g})"
        if short
        else "",
    )


def compare_sketches(
    name: str,
    reference: kll_floats_sketch,
    current: kll_floats_sketch,
    config: DriftConfig = DriftConfig(),
    kind: FeatureKind | None = None,
) -> FeatureDrift:
    """Drift of one sketched feature; the decision uses the raw p-value (see `analyse_drift` for BH)."""
    kind = kind or config.feature_kinds.get(name, FeatureKind.NUMERICAL)
    n_ref, n_cur = float(reference.n), float(current.n)
    ref_items, _ = sketch_items(reference)
    cur_items, _ = sketch_items(current)
    n_unique = int(np.union1d(ref_items, cur_items).size)
    test = _choose(name, kind, n_ref, n_unique, config, config.feature_tests.get(name, config.test))
    result = _new_result(name, kind, test, n_ref, n_cur, config)
    if result.status != "ok":
        return result
    categorical = kind == FeatureKind.CATEGORICAL or n_unique <= config.categorical_max_unique
    if categorical and test not in NUMERICAL_ONLY_TESTS:
        return compare_counts(name, category_counts(reference), category_counts(current), config, kind, forced=test)
    ks = ks_sketches(reference, current)
    metrics = {
        "ks": ks.statistic,
        "wasserstein_norm": wasserstein_sketches(reference, current),
        "psi": psi_sketches(reference, current, config.bins),
        "jensenshannon": jensen_shannon_sketches(reference, current, config.bins),
    }
    result.metrics = metrics
    if test == DriftTest.KS:
        result.statistic = ks.statistic
        result.statistic_low = max(0.0, ks.statistic - ks.error_bound)
        result.statistic_high = min(1.0, ks.statistic + ks.error_bound)
        result.p_value = ks.p_value if config.sketch_error else ks.p_value_uncorrected
        if ks.error_bound:
            result.detail = f"sketch rank error +/-{ks.error_bound:.4f} on D"
    elif test == DriftTest.WASSERSTEIN:
        result.statistic = metrics["wasserstein_norm"]
    elif test == DriftTest.PSI:
        result.statistic = metrics["psi"]
    elif test == DriftTest.JENSEN_SHANNON:
        result.statistic = metrics["jensenshannon"]
    else:  # chi-square / z forced on a numerical feature: test its distinct values as categories
        return compare_counts(name, category_counts(reference), category_counts(current), config, kind, forced=test)
    result.decide(result.p_value)
    return result


def compare_counts(
    name: str,
    reference: Mapping[str, float],
    current: Mapping[str, float],
    config: DriftConfig = DriftConfig(),
    kind: FeatureKind = FeatureKind.CATEGORICAL,
    forced: DriftTest | None = None,
) -> FeatureDrift:
    """Drift of a categorical distribution given as counts (predictions, confidence buckets, or a
    categorical feature's sketch)."""
    _, ref, cur = aligned_counts(reference, current)
    n_ref, n_cur = float(ref.sum()), float(cur.sum())
    n_unique = int(ref.size)
    test = _choose(name, FeatureKind.CATEGORICAL, n_ref, n_unique, config, forced)
    result = _new_result(name, kind, test, n_ref, n_cur, config)
    if result.status != "ok":
        return result
    result.metrics = {
        "psi": psi_counts(reference, current),
        "jensenshannon": jensen_shannon_counts(reference, current),
    }
    if test == DriftTest.CHI_SQUARE:
        result.statistic, result.p_value = chi_square_counts(reference, current)
    elif test == DriftTest.Z:
        result.statistic, result.p_value = z_test_counts(reference, current)
    elif test == DriftTest.PSI:
        result.statistic = result.metrics["psi"]
    else:
        result.statistic = result.metrics["jensenshannon"]
    result.decide(result.p_value)
    return result


def _missing(name: str, kind: FeatureKind, config: DriftConfig, side: str) -> FeatureDrift:
    test = DriftTest.KS if kind == FeatureKind.NUMERICAL else DriftTest.CHI_SQUARE
    return FeatureDrift(
        feature=name,
        kind=kind,
        test=test,
        status="missing",
        threshold=config.threshold(test),
        detail=f"no data in the {side}",
    )


def _histogram_counts(hist: Histogram | None) -> dict[str, float]:
    if hist is None:
        return {}
    labels = [f"<={e:g}" for e in hist.edges] + [f">{hist.edges[-1]:g}"]
    return {label: float(c) for label, c in zip(labels, hist.counts, strict=True) if c}


def compare_aggregates(
    reference: TelemetryAggregate,
    current: TelemetryAggregate,
    config: DriftConfig = DriftConfig(),
    *,
    cohort: str = "all",
    features: Iterable[str] | None = None,
) -> CohortDrift:
    """Drift of ``current`` against ``reference``: every feature sketched in the reference (or the given
    ``features``), predictions and confidence. Uncorrected; `analyse_drift` applies BH over a report."""
    names = sorted(features if features is not None else reference.sketches)
    results: list[FeatureDrift] = []
    for name in names:
        kind = config.feature_kinds.get(name, FeatureKind.NUMERICAL)
        ref_sk, cur_sk = reference.sketches.get(name), current.sketches.get(name)
        if ref_sk is None or ref_sk.is_empty():
            results.append(_missing(name, kind, config, "reference"))
        elif cur_sk is None or cur_sk.is_empty():
            results.append(_missing(name, kind, config, "current window"))
        else:
            results.append(compare_sketches(name, ref_sk, cur_sk, config, kind))
    predictions = None
    if reference.predictions or current.predictions:
        if reference.predictions and current.predictions:
            predictions = compare_counts(
                PREDICTIONS, reference.predictions, current.predictions, config, forced=config.prediction_test
            )
        else:
            side = "reference" if not reference.predictions else "current window"
            predictions = _missing(PREDICTIONS, FeatureKind.CATEGORICAL, config, side)
    confidence = None
    ref_conf = _histogram_counts(reference.confidence_histogram())
    cur_conf = _histogram_counts(current.confidence_histogram())
    if ref_conf or cur_conf:
        if ref_conf and cur_conf:
            confidence = compare_counts(CONFIDENCE, ref_conf, cur_conf, config, forced=config.confidence_test)
        else:
            confidence = _missing(
                CONFIDENCE, FeatureKind.CATEGORICAL, config, "reference" if not ref_conf else "current window"
            )
    out = CohortDrift(
        cohort=cohort,
        devices=len(current.devices),
        requests=current.requests,
        features=results,
        predictions=predictions,
        confidence=confidence,
    )
    out.summarise(config.drift_share)
    return out


def analyse_drift(
    reference: TelemetryAggregate | ReferenceProfile,
    cohorts: Mapping[str, TelemetryAggregate],
    config: DriftConfig = DriftConfig(),
    *,
    model: str | None = None,
    version: str | None = None,
) -> DriftReport:
    """Drift report for every cohort against one reference, with Benjamini-Hochberg across every p-value
    test of the report (cohorts x features, predictions, confidence) when ``config.fdr_correction``."""
    if isinstance(reference, ReferenceProfile):
        if reference.feature_kinds:
            kinds = {**reference.feature_kinds, **config.feature_kinds}
            config = config.model_copy(update={"feature_kinds": {k: FeatureKind(v) for k, v in kinds.items()}})
        reference = reference.to_aggregate()
    results = [compare_aggregates(reference, agg, config, cohort=name) for name, agg in sorted(cohorts.items())]
    tested = [r for c in results for r in c.all_results() if r.is_p_value_test and r.p_value is not None]
    if config.fdr_correction and tested:
        adjusted = benjamini_hochberg([r.p_value for r in tested])
        for r, q in zip(tested, adjusted, strict=True):
            r.p_adjusted = q
            r.decide(q)
    for c in results:
        c.summarise(config.drift_share)
    return DriftReport(
        model=model,
        version=version,
        correction="benjamini-hochberg" if config.fdr_correction else "none",
        corrected_tests=len(tested) if config.fdr_correction else 0,
        config=config,
        cohorts=results,
    )
