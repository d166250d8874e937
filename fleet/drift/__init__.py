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

The package, one job per module: `config` (`DriftConfig`, tests and thresholds), `statistics` (the tests on
sketches and counts), `compare` (test choice; a feature, a cohort, a report), `report` (the results),
`cohorts` (grouping telemetry batches). Invalid settings raise `fleet.errors.FleetConfigError` (pydantic's
``ValidationError`` for config).
"""

from fleet.drift.cohorts import group_cohorts
from fleet.drift.compare import (
    CONFIDENCE,
    PREDICTIONS,
    analyse_drift,
    compare_aggregates,
    compare_counts,
    compare_sketches,
)
from fleet.drift.config import DriftConfig, DriftTest, FeatureKind
from fleet.drift.report import CohortDrift, DriftReport, FeatureDrift
from fleet.drift.statistics import (
    KSResult,
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

__all__ = [
    "CONFIDENCE",
    "PREDICTIONS",
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
    "z_test_counts",
]
