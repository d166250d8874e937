"""How drift is tested: feature kinds, the available tests, their default thresholds, and `DriftConfig`."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
#: Tests that need a numerical feature (a categorical one falls back to its default test).
NUMERICAL_ONLY_TESTS = frozenset({DriftTest.KS, DriftTest.WASSERSTEIN})
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
            if forced in NUMERICAL_ONLY_TESTS:
                raise ValueError(f"{name} cannot be {forced.value}: predictions and confidence are counts")
        for feature, forced in self.feature_tests.items():
            if forced in NUMERICAL_ONLY_TESTS and self.feature_kinds.get(feature) == FeatureKind.CATEGORICAL:
                raise ValueError(f"feature {feature!r} is categorical; {forced.value} needs a numerical feature")
        return self

    def threshold(self, test: DriftTest) -> float:
        """The threshold in force for ``test``."""
        return self.thresholds.get(test, DEFAULT_THRESHOLDS[test])
