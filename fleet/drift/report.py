"""The drift results: one `FeatureDrift` per test, one `CohortDrift` per cohort, and the `DriftReport`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet.drift.config import P_VALUE_TESTS, DriftConfig, DriftTest, FeatureKind


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
    skipped_batches: int = 0
    """Stored batches left out because they could not be used (malformed data of some device)."""

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
