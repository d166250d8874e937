"""Drift of inputs, predictions and confidence, per feature and per cohort, from merged telemetry.

Everything works on merged KLL sketches (features) and counts (predictions, confidence buckets), so the
hub never needs raw samples: thousands of devices merge into one sketch per feature and cohort.

Test choice follows Evidently's defaults (``small_sample_max`` is the reference size that switches them):

================================  ============================  ==========================================
feature                           reference n <= 1000           reference n > 1000
================================  ============================  ==========================================
numerical, > 5 distinct values    Kolmogorov-Smirnov, p < 0.05  Wasserstein distance / ref. std >= 0.1
categorical or <= 5 distinct      chi-square p < 0.05           Jensen-Shannon distance >= 0.1
  ... with <= 2 distinct          two-proportion z, p < 0.05    Jensen-Shannon distance >= 0.1
================================  ============================  ==========================================

PSI (>= 0.1) is available per feature or for all. Differences from Evidently, each for a reason:

- KS accounts for sketch error: the KS distance ``D`` read from two KLL sketches is within
  ``eps_ref + eps_cur`` of the distance on the raw data (the sketches' normalised rank errors, 99%
  confidence). The p-value is taken at ``D - eps`` (the smallest distance the data allow), so sketch noise
  alone never reports drift. Exact sketches (n <= k) give exactly ``scipy.stats.ks_2samp``.
- chi-square is the two-sample test of homogeneity (2 x K contingency table, as
  ``scipy.stats.chi2_contingency`` without continuity correction) rather than a goodness of fit against
  reference proportions, which fails when a category is new.
- PSI and Jensen-Shannon on numerical features use ``bins`` reference-quantile bins (deciles by default)
  computed from the reference sketch, instead of Sturges bins over the pooled raw data we do not have.
- Confidence is tested on its fixed histogram buckets as categories.
- Benjamini-Hochberg controls the false discovery rate across every p-value test of a report (cohorts x
  features, plus prediction and confidence). Distance tests are effect-size thresholds and are not
  corrected.

Invalid settings raise `fleet.errors.FleetConfigError` (pydantic's ``ValidationError`` for config).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Literal

import numpy as np
from datasketches import kll_floats_sketch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats
from scipy.spatial import distance

from fleet._stats import benjamini_hochberg, two_proportion_z
from fleet.errors import FleetConfigError
from fleet.selection import LabelSelector, parse_selector, selector_labels
from fleet.telemetry import ReferenceProfile, TelemetryAggregate
from fleet.wire.messages import Histogram, TelemetryBatch
from fleet.wire.sketches import sketch_items

__all__ = [
    "CohortDrift",
    "DriftConfig",
    "DriftReport",
    "DriftTest",
    "FeatureDrift",
    "FeatureKind",
    "KSResult",
    "analyse_drift",
    "category_counts",
    "chi_square_counts",
    "compare_aggregates",
    "compare_counts",
    "compare_sketches",
    "group_cohorts",
    "jensen_shannon_counts",
    "jensen_shannon_sketches",
    "ks_sketches",
    "psi_counts",
    "psi_sketches",
    "wasserstein_sketches",
]

PREDICTIONS = "__predictions__"
CONFIDENCE = "__confidence__"
_PSI_EMPTY_BIN = 1e-4  # Evidently's floor for empty bins


class FeatureKind(StrEnum):
    """How a feature's values are compared."""

    NUMERICAL = "numerical"
    CATEGORICAL = "categorical"


class DriftTest(StrEnum):
    """Available drift tests; the first three give p-values, the rest distances."""

    KS = "ks"
    CHI_SQUARE = "chisquare"
    Z = "z"
    WASSERSTEIN = "wasserstein"
    PSI = "psi"
    JENSEN_SHANNON = "jensenshannon"


P_VALUE_TESTS = frozenset({DriftTest.KS, DriftTest.CHI_SQUARE, DriftTest.Z})
_NUMERICAL_ONLY = frozenset({DriftTest.KS, DriftTest.WASSERSTEIN})
DEFAULT_THRESHOLDS: Mapping[DriftTest, float] = {
    DriftTest.KS: 0.05,
    DriftTest.CHI_SQUARE: 0.05,
    DriftTest.Z: 0.05,
    DriftTest.WASSERSTEIN: 0.1,
    DriftTest.PSI: 0.1,
    DriftTest.JENSEN_SHANNON: 0.1,
}


class DriftConfig(BaseModel):
    """How drift is tested. Defaults are Evidently's; every choice can be overridden."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    small_sample_max: Annotated[int, Field(ge=1)] = 1000
    """Reference sizes up to this use p-value tests (KS, chi-square, z); above it, distances."""
    categorical_max_unique: Annotated[int, Field(ge=2)] = 5
    """Numerical features with at most this many distinct values are tested as categorical."""
    thresholds: dict[DriftTest, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    """Per-test thresholds (p-value for KS/chi-square/z, distance otherwise); missing ones use defaults."""
    test: DriftTest | None = None
    """Force one test for every feature (categorical features fall back to the default if it is KS or
    Wasserstein)."""
    feature_tests: dict[str, DriftTest] = Field(default_factory=dict)
    """Per-feature test, overriding ``test``."""
    feature_kinds: dict[str, FeatureKind] = Field(default_factory=dict)
    """Declared kinds; undeclared features are numerical (the reference profile may declare more)."""
    prediction_test: DriftTest | None = None
    confidence_test: DriftTest | None = None
    bins: Annotated[int, Field(ge=2, le=1000)] = 10
    """Reference-quantile bins for PSI and Jensen-Shannon on numerical features."""
    fdr_correction: bool = True
    """Benjamini-Hochberg across all p-value tests of a report."""
    drift_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    """A cohort's inputs drifted when at least this share of its tested features drifted."""
    min_samples: Annotated[int, Field(ge=1)] = 30
    """Fewer values than this on either side: the feature is reported as insufficient data."""
    sketch_error: bool = True
    """KS p-values at ``D - eps`` (sketch rank error); False uses the sketch's ``D`` as is."""

    @model_validator(mode="after")
    def _check(self) -> DriftConfig:
        for test, value in self.thresholds.items():
            if test in P_VALUE_TESTS and not value < 1:
                raise ValueError(f"threshold for {test.value} is a p-value and must be below 1")
        for name, forced in (
            ("prediction_test", self.prediction_test),
            ("confidence_test", self.confidence_test),
        ):
            if forced in _NUMERICAL_ONLY:
                raise ValueError(f"{name} cannot be {forced.value}: predictions and confidence are counts")
        for feature, forced in self.feature_tests.items():
            if forced in _NUMERICAL_ONLY and self.feature_kinds.get(feature) == FeatureKind.CATEGORICAL:
                raise ValueError(f"feature {feature!r} is categorical; {forced.value} needs a numerical feature")
        return self

    def threshold(self, test: DriftTest) -> float:
        """The threshold in force for ``test``."""
        return self.thresholds.get(test, DEFAULT_THRESHOLDS[test])


class FeatureDrift(BaseModel):
    """One drift test of one feature (or of predictions / confidence) in one cohort."""

    model_config = ConfigDict(extra="forbid")

    feature: str
    kind: FeatureKind
    test: DriftTest
    status: Literal["ok", "insufficient_data", "missing"]
    statistic: float | None = None
    """KS D, chi-square, z, or the distance."""
    statistic_low: float | None = None
    statistic_high: float | None = None
    """Bounds on the statistic implied by sketch error (KS from estimation-mode sketches)."""
    p_value: float | None = None
    p_adjusted: float | None = None
    threshold: float
    drifted: bool | None = None
    n_reference: float = 0
    n_current: float = 0
    detail: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Other distances for context (psi, jensenshannon, wasserstein_norm, ks), not used for the decision."""

    @property
    def is_p_value_test(self) -> bool:
        """Whether the decision is a p-value (and so subject to FDR correction)."""
        return self.test in P_VALUE_TESTS

    def decide(self, p_for_decision: float | None) -> None:
        """Set ``drifted`` from the p-value given (p-value tests) or the statistic (distances)."""
        if self.status != "ok" or self.statistic is None:
            self.drifted = None
        elif self.is_p_value_test:
            self.drifted = p_for_decision is not None and p_for_decision < self.threshold
        else:
            self.drifted = self.statistic >= self.threshold


class CohortDrift(BaseModel):
    """Drift of one cohort against the reference."""

    model_config = ConfigDict(extra="forbid")

    cohort: str
    devices: int
    requests: int
    features: list[FeatureDrift]
    predictions: FeatureDrift | None = None
    confidence: FeatureDrift | None = None
    tested_features: int = 0
    drifted_features: int = 0
    drift_share: float | None = None
    dataset_drift: bool | None = None
    """Inputs drifted: share of drifted features >= the configured share (None when nothing was tested)."""

    def summarise(self, share_threshold: float) -> None:
        """Recount drifted features and the cohort's dataset drift."""
        tested = [f for f in self.features if f.drifted is not None]
        self.tested_features = len(tested)
        self.drifted_features = sum(1 for f in tested if f.drifted)
        if tested:
            self.drift_share = self.drifted_features / len(tested)
            self.dataset_drift = self.drift_share >= share_threshold
        else:
            self.drift_share = None
            self.dataset_drift = None

    def all_results(self) -> list[FeatureDrift]:
        """Feature, prediction and confidence results of this cohort."""
        return [*self.features, *(r for r in (self.predictions, self.confidence) if r is not None)]


class DriftReport(BaseModel):
    """Drift of every cohort; JSON-ready (``model_dump_json``)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    version: str | None = None
    correction: Literal["benjamini-hochberg", "none"]
    corrected_tests: int
    config: DriftConfig
    cohorts: list[CohortDrift]

    @property
    def drifted_cohorts(self) -> list[str]:
        """Cohorts whose inputs or predictions drifted."""
        return [
            c.cohort for c in self.cohorts if c.dataset_drift or (c.predictions is not None and c.predictions.drifted)
        ]

    def rows(self) -> list[dict[str, str]]:
        """One flat row per test, for tables."""
        out = []
        for c in self.cohorts:
            for r in c.all_results():
                out.append(
                    {
                        "cohort": c.cohort,
                        "feature": r.feature,
                        "test": r.test.value,
                        "statistic": _fmt(r.statistic),
                        "p": _fmt(r.p_adjusted if r.p_adjusted is not None else r.p_value),
                        "threshold": _fmt(r.threshold),
                        "drift": {True: "DRIFT", False: "ok", None: r.status}[r.drifted],
                    }
                )
        return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


# ------------------------------------------------------------------------------------- sketch statistics


def _rank_error(sk: kll_floats_sketch) -> float:
    return float(sk.normalized_rank_error(False)) if sk.is_estimation_mode() else 0.0


def _ecdf(items: np.ndarray, weights: np.ndarray, points: np.ndarray) -> np.ndarray:
    cum = np.concatenate(([0], np.cumsum(weights)))
    return cum[np.searchsorted(items, points, side="right")] / cum[-1]


class KSResult(BaseModel):
    """Two-sample KS from sketches: ``statistic`` is D read from the sketches; D on the raw data lies in
    ``[statistic - error_bound, statistic + error_bound]`` (99% per-sketch confidence)."""

    model_config = ConfigDict(frozen=True)

    statistic: float
    error_bound: float
    p_value: float
    """p at ``max(0, D - error_bound)``: sketch noise alone does not make it small."""
    p_value_uncorrected: float
    """p at D, ignoring sketch error."""
    exact: bool


_KSTWO_MAX_N = 10_000


def _ks_sf(d: float, en: int) -> float:
    """P(D >= d) for the two-sample KS with effective size ``en``: scipy's ``kstwo`` as ``ks_2samp``'s
    asymptotic method uses, or the limiting Kolmogorov distribution above 10,000 (where they agree to
    about 1e-3 and ``kstwo`` gets slow)."""
    if d <= 0:
        return 1.0
    if en <= _KSTWO_MAX_N:
        return float(stats.kstwo.sf(d, en))
    return float(stats.kstwobign.sf(d * math.sqrt(en)))


def ks_sketches(reference: kll_floats_sketch, current: kll_floats_sketch) -> KSResult:
    """Two-sample Kolmogorov-Smirnov between two KLL sketches, accounting for their rank error.

    Two exact sketches (not in estimation mode) hold every value, and the result is
    ``scipy.stats.ks_2samp`` on them; otherwise D is the largest CDF gap over the retained items and the
    p-value uses scipy's asymptotic distribution with the true sample sizes.
    """
    if reference.is_empty() or current.is_empty():
        raise FleetConfigError("KS needs two non-empty sketches")
    ref_items, ref_w = sketch_items(reference)
    cur_items, cur_w = sketch_items(current)
    exact = not reference.is_estimation_mode() and not current.is_estimation_mode()
    if exact:
        res = stats.ks_2samp(np.repeat(ref_items, ref_w), np.repeat(cur_items, cur_w))
        d, p = float(res.statistic), float(res.pvalue)
        return KSResult(statistic=d, error_bound=0.0, p_value=p, p_value_uncorrected=p, exact=True)
    points = np.union1d(ref_items, cur_items)
    d = float(np.max(np.abs(_ecdf(ref_items, ref_w, points) - _ecdf(cur_items, cur_w, points))))
    eps = _rank_error(reference) + _rank_error(current)
    en = round(reference.n * current.n / (reference.n + current.n))
    p_raw, p_low = _ks_sf(d, en), _ks_sf(max(0.0, d - eps), en)
    return KSResult(statistic=d, error_bound=eps, p_value=p_low, p_value_uncorrected=p_raw, exact=False)


def wasserstein_sketches(reference: kll_floats_sketch, current: kll_floats_sketch, *, normed: bool = True) -> float:
    """First Wasserstein distance between the sketched distributions, divided by the reference standard
    deviation (at least 0.001) when ``normed``, as Evidently's ``wasserstein`` test."""
    ref_items, ref_w = sketch_items(reference)
    cur_items, cur_w = sketch_items(current)
    if ref_items.size == 0 or cur_items.size == 0:
        raise FleetConfigError("Wasserstein needs two non-empty sketches")
    wd = float(stats.wasserstein_distance(ref_items, cur_items, ref_w, cur_w))
    if not normed:
        return wd
    mean = np.average(ref_items, weights=ref_w)
    std = math.sqrt(float(np.average((ref_items - mean) ** 2, weights=ref_w)))
    return wd / max(std, 0.001)


def _quantile_edges(reference: kll_floats_sketch, bins: int) -> np.ndarray:
    qs = reference.get_quantiles([i / bins for i in range(1, bins)])
    return np.unique(np.asarray(qs, dtype=np.float64))


def _binned(reference: kll_floats_sketch, current: kll_floats_sketch, bins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = _quantile_edges(reference, bins)
    if edges.size == 0:
        return np.ones(1), np.ones(1)
    # inclusive=True: bucket i is (edge[i-1], edge[i]], the same as np.searchsorted(edges, x, "left")
    ref = np.asarray(reference.get_pmf(edges.tolist(), True), dtype=np.float64)
    cur = np.asarray(current.get_pmf(edges.tolist(), True), dtype=np.float64)
    return np.clip(ref, 0, None), np.clip(cur, 0, None)


def _psi(ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    ref = np.where(ref_p <= 0, _PSI_EMPTY_BIN, ref_p)
    cur = np.where(cur_p <= 0, _PSI_EMPTY_BIN, cur_p)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def _js(ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    if ref_p.sum() <= 0 or cur_p.sum() <= 0:
        return math.nan
    return float(distance.jensenshannon(ref_p, cur_p))


def psi_sketches(reference: kll_floats_sketch, current: kll_floats_sketch, bins: int = 10) -> float:
    """Population stability index over ``bins`` reference-quantile bins (empty bins floored at 1e-4)."""
    return _psi(*_binned(reference, current, bins))


def jensen_shannon_sketches(reference: kll_floats_sketch, current: kll_floats_sketch, bins: int = 10) -> float:
    """Jensen-Shannon distance (natural log, as scipy) over ``bins`` reference-quantile bins."""
    return _js(*_binned(reference, current, bins))


def category_counts(sketch: kll_floats_sketch) -> dict[str, float]:
    """Estimated count per distinct value of a sketched categorical feature (codes as text keys).
    Exact while the sketch is not in estimation mode."""
    items, weights = sketch_items(sketch)
    out: dict[str, float] = {}
    for value, weight in zip(items.tolist(), weights.tolist(), strict=True):
        key = _category_key(value)
        out[key] = out.get(key, 0.0) + weight
    return out


def _category_key(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# ------------------------------------------------------------------------------------- count statistics


def _aligned(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    keys = sorted(k for k in set(reference) | set(current) if reference.get(k, 0) > 0 or current.get(k, 0) > 0)
    ref = np.array([float(reference.get(k, 0.0)) for k in keys])
    cur = np.array([float(current.get(k, 0.0)) for k in keys])
    return keys, ref, cur


def chi_square_counts(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[float, float]:
    """Chi-square test of homogeneity of two category-count tables: ``(statistic, p_value)``, as
    ``scipy.stats.chi2_contingency(..., correction=False)``. A single category gives ``(0, 1)``."""
    _, ref, cur = _aligned(reference, current)
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise FleetConfigError("chi-square needs counts on both sides")
    if ref.size < 2:
        return 0.0, 1.0
    res = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    return float(res.statistic), float(res.pvalue)


def z_test_counts(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[float, float]:
    """Two-proportion z-test on the share of the first category (sorted keys), as Evidently's ``z``
    test; ``(z, p_value)``. Counts are rounded to whole observations."""
    keys, ref, cur = _aligned(reference, current)
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise FleetConfigError("z-test needs counts on both sides")
    if len(keys) < 2:
        return 0.0, 1.0
    res = two_proportion_z(round(ref[0]), round(ref.sum()), round(cur[0]), round(cur.sum()))
    return res.z, res.p_value


def psi_counts(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """PSI between two category-count tables (empty categories floored at 1e-4)."""
    _, ref, cur = _aligned(reference, current)
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise FleetConfigError("PSI needs counts on both sides")
    return _psi(ref / ref.sum(), cur / cur.sum())


def jensen_shannon_counts(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (natural log) between two category-count tables."""
    _, ref, cur = _aligned(reference, current)
    return _js(ref, cur)


# ------------------------------------------------------------------------------------------ test choice


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
    if chosen in _NUMERICAL_ONLY and kind == FeatureKind.CATEGORICAL:
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
    if categorical and test not in _NUMERICAL_ONLY:
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
    _, ref, cur = _aligned(reference, current)
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


# --------------------------------------------------------------------------------------------- cohorts


def _dimension_value(batch: TelemetryBatch, dim: str, labels: Mapping[str, Mapping[str, str]]) -> str:
    if dim == "target":
        return batch.target
    if dim == "version":
        return batch.version
    if dim == "model":
        return batch.model
    if dim.startswith("label:") and len(dim) > 6:
        return labels.get(batch.device_id, {}).get(dim[6:], "(none)")
    raise FleetConfigError(f"unknown cohort dimension {dim!r}: use target, version, model or label:<key>")


def group_cohorts(
    batches: Iterable[TelemetryBatch],
    *,
    by: Sequence[str] = ("target",),
    selectors: Mapping[str, str | LabelSelector] | None = None,
    device_labels: Mapping[str, Mapping[str, str]] | None = None,
    include_all: bool = True,
) -> dict[str, TelemetryAggregate]:
    """Aggregate batches into cohorts: one per combination of the ``by`` dimensions (``target``,
    ``version``, ``model``, ``label:<key>``), one per named label selector (devices' labels plus
    ``target``), and ``all`` when ``include_all``."""
    labels = device_labels or {}
    for dim in by:
        if dim not in ("target", "version", "model") and not (dim.startswith("label:") and len(dim) > 6):
            raise FleetConfigError(f"unknown cohort dimension {dim!r}: use target, version, model or label:<key>")
    parsed = {name: parse_selector(s) if isinstance(s, str) else s for name, s in (selectors or {}).items()}
    out: dict[str, TelemetryAggregate] = {}

    def into(name: str, single: TelemetryAggregate) -> None:
        agg = out.get(name)
        if agg is None:
            agg = out[name] = TelemetryAggregate()
        agg.merge(single)

    for batch in batches:
        single = TelemetryAggregate.from_batches([batch])  # parse the sketches once per batch
        if include_all:
            into("all", single)
        if by:
            into(",".join(f"{d}={_dimension_value(batch, d, labels)}" for d in by), single)
        device_view = selector_labels(labels.get(batch.device_id, {}), batch.target)
        for name, sel in parsed.items():
            if sel.matches(device_view):
                into(name, single)
    return out
