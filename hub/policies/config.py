"""A model version's policy: which signals breach it, for how long, and what the hub then does."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

Share = Annotated[float, Field(ge=0, le=1)]


class Policy(BaseModel):
    """Thresholds per cohort and the actions taken once one is passed for ``window_s`` without a break.

    A cohort breaches when any set threshold is passed: the share of its drifted input features, the drift
    statistic of one named feature (or that feature's own drift decision), or the share of input rows
    breaking a data contract rule.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_drift_share: Share | None = Field(default=None, description="share of drifted features that breaches")
    feature: str | None = Field(default=None, description="a feature watched on its own")
    max_feature_statistic: float | None = Field(
        default=None, gt=0, description="the feature's drift statistic above which it breaches (else: drifted)"
    )
    max_violation_rate: Share | None = Field(default=None, description="highest contract rule rate that breaches")
    window_s: float = Field(default=600.0, ge=0, description="how long a breach must last before acting")
    lookback_s: float = Field(default=3600.0, gt=0, description="telemetry of this many seconds is evaluated")
    min_requests: int = Field(default=1, ge=1, description="cohorts with less telemetry are not judged")
    by: list[str] = Field(default_factory=lambda: ["target"], description="cohort dimensions, as in drift reports")
    cohorts: dict[str, str] = Field(default_factory=dict, description="named label selectors, as in drift reports")
    pause_rollouts: bool = Field(default=True, description="pause running rollouts of the model")
    rollback: bool = Field(default=False, description="roll the breaching cohort's devices back")
    rollback_to: str | None = Field(default=None, description="version to roll back to (default: last good)")

    @model_validator(mode="after")
    def _has_a_signal(self) -> Policy:
        if self.max_drift_share is None and self.feature is None and self.max_violation_rate is None:
            raise ValueError("set at least one of max_drift_share, feature or max_violation_rate")
        if self.max_feature_statistic is not None and self.feature is None:
            raise ValueError("max_feature_statistic needs feature")
        return self
