"""The rollout plan: validated config saying how fast, how safely and when a model version reaches a fleet.

A plan names the model version, the devices (a label selector), a stratified canary, the waves after it
(cumulative percentages or an exponential rate), the per-wave success threshold, the failure threshold
that aborts, the quality gate between waves, approvals, the per-device timeout and maintenance windows.
The JSON form is what the hub stores and the REST API accepts, for example::

    {"model": "digits", "version": "1.2.0", "selector": "env=prod",
     "canary": {"percent": 5}, "waves": {"type": "percentages", "steps": [10, 50, 100]},
     "failure": {"max_rate": 0.05, "min_devices": 10},
     "gate": {"after": "every_wave", "soak_s": 600,
              "canary": {"min_devices": 3, "min_requests": 100, "metrics": {"confidence": {"critical": true}}}}}

Invalid plans raise pydantic's ``ValidationError``; the CLI helpers raise `fleet.errors.FleetConfigError`.
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fleet.canary.config import DEFAULT_METRICS, CanaryConfig, CanaryMetric, MetricSpec
from fleet.errors import FleetConfigError
from fleet.selection import SelectionPolicy, parse_selector
from fleet.windows import MaintenanceWindow

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
_EPS = 1e-9


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CanarySpec(_Config):
    """The first wave: ``count`` devices or ``percent`` of the eligible ones (exactly one of the two).

    Sampling is stratified by device class: every class gets at least ``min_per_class`` devices (or all it
    has), even when that makes the canary larger than asked; the rest is shared in proportion to class size.
    """

    count: Annotated[int, Field(ge=1)] | None = None
    percent: Annotated[float, Field(gt=0, le=100)] | None = None
    min_per_class: Annotated[int, Field(ge=0)] = 1

    @model_validator(mode="after")
    def _one(self) -> CanarySpec:
        if (self.count is None) == (self.percent is None):
            raise ValueError("canary needs exactly one of count or percent")
        return self

    def requested(self, population: int) -> int:
        """The canary size asked for, before class coverage is added."""
        if self.count is not None:
            return min(population, self.count)
        return min(population, math.ceil((self.percent or 0.0) / 100 * population - _EPS))


class PercentWaves(_Config):
    """Waves reaching cumulative percentages of the eligible devices, e.g. ``[10, 50, 100]``."""

    type: Literal["percentages"] = "percentages"
    steps: Annotated[list[Annotated[float, Field(gt=0, le=100)]], Field(min_length=1, max_length=50)]

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("wave percentages must strictly increase")
        if steps[-1] != 100:
            raise ValueError("the last wave must reach 100 percent")
        return steps


class ExponentialWaves(_Config):
    """Waves of ``initial`` devices, then each ``factor`` times larger than the last, until all are in."""

    type: Literal["exponential"] = "exponential"
    initial: Annotated[int, Field(ge=1)]
    factor: Annotated[float, Field(gt=1, le=10)] = 2.0


WaveSpec = Annotated[PercentWaves | ExponentialWaves, Field(discriminator="type")]


class FailureThreshold(_Config):
    """Abort when more than ``max_count`` devices, or more than ``max_rate`` of finished devices, failed.

    Counted over the whole rollout once ``min_devices`` have finished, or earlier when every device sent
    so far has finished (so a small canary that fails still aborts). Timeouts count as failures unless
    ``count_timeouts`` is false.
    """

    max_rate: Annotated[float, Field(ge=0, lt=1)] | None = 0.05
    max_count: Annotated[int, Field(ge=0)] | None = None
    min_devices: Annotated[int, Field(ge=1)] = 10
    count_timeouts: bool = True

    @model_validator(mode="after")
    def _some(self) -> FailureThreshold:
        if self.max_rate is None and self.max_count is None:
            raise ValueError("failure threshold needs max_rate or max_count")
        return self


class GateSpec(_Config):
    """Ask the canary analysis for a verdict after the canary (``after='canary'``) or after every wave.

    The first request goes out ``soak_s`` after the wave completed; an inconclusive verdict is asked again
    every ``retry_interval_s``; with no pass or fail ``max_wait_s`` after the wave completed, the rollout
    pauses for a person. ``canary`` holds the settings of the analysis itself (`fleet.canary.CanaryConfig`:
    minimum devices and requests per group, tolerances, which metrics are critical).
    """

    after: Literal["canary", "every_wave"] = "every_wave"
    soak_s: Annotated[float, Field(ge=0)] = 0.0
    retry_interval_s: Annotated[float, Field(gt=0)] = 300.0
    max_wait_s: Annotated[float, Field(gt=0)] = 3600.0
    canary: CanaryConfig = Field(default_factory=CanaryConfig)

    @model_validator(mode="after")
    def _order(self) -> GateSpec:
        if self.soak_s >= self.max_wait_s:
            raise ValueError("gate soak_s must be shorter than max_wait_s")
        return self


class RolloutPlan(_Config):
    """Everything that decides how one model version reaches the devices a selector picks."""

    model: Name
    version: Name
    selector: str = ""
    canary: CanarySpec | None = Field(default_factory=lambda: CanarySpec(percent=5))
    waves: WaveSpec = Field(default_factory=lambda: PercentWaves(steps=[10, 50, 100]))
    success_threshold: Annotated[float, Field(gt=0, le=1)] = 0.95
    approval: Literal["none", "after_canary", "every_wave"] = "none"
    failure: FailureThreshold = Field(default_factory=FailureThreshold)
    gate: GateSpec | None = Field(default_factory=GateSpec)
    device_timeout_s: Annotated[float, Field(gt=0)] = 1800.0
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    class_labels: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list, max_length=8)
    seed: Annotated[str, Field(max_length=128)] = ""
    selection: SelectionPolicy = Field(default_factory=SelectionPolicy)

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return str(parse_selector(value))

    @property
    def first_wave(self) -> int:
        """Index of the first wave: 0 is the canary, 1 the first wave after it."""
        return 0 if self.canary is not None else 1

    def gated(self, wave: int) -> bool:
        """Whether the quality gate runs after ``wave`` completes."""
        if self.gate is None:
            return False
        return self.gate.after == "every_wave" or wave == self.first_wave

    def needs_approval(self, wave: int) -> bool:
        """Whether a person must approve before the wave after ``wave`` starts."""
        return self.approval == "every_wave" or (self.approval == "after_canary" and wave == self.first_wave)

    def schedule(self, population: int, canary_size: int) -> list[int]:
        """Cumulative device counts reached by the end of each wave; index 0 is the canary.

        The last entry always equals ``population``; entries never decrease.
        """
        cumulative = [min(canary_size, population)]
        if isinstance(self.waves, PercentWaves):
            for pct in self.waves.steps:
                reach = min(population, math.ceil(pct / 100 * population - _EPS))
                cumulative.append(max(cumulative[-1], reach))
        else:
            size = float(self.waves.initial)
            while cumulative[-1] < population:
                cumulative.append(min(population, cumulative[-1] + math.ceil(size - _EPS)))
                size *= self.waves.factor
        if cumulative[-1] < population:
            cumulative.append(population)
        return cumulative


# ------------------------------------------------------------------------------------- CLI helpers


def parse_canary(text: str) -> CanarySpec | None:
    """``"5%"`` -> 5 percent, ``"3"`` -> 3 devices, ``"0"`` or ``"none"`` -> no canary."""
    raw = text.strip().lower()
    if raw in ("", "0", "0%", "none", "off"):
        return None
    try:
        if raw.endswith("%"):
            return CanarySpec(percent=float(raw[:-1]))
        return CanarySpec(count=int(raw))
    except (ValueError, ValidationError) as exc:
        raise FleetConfigError(f"invalid canary {text!r}: use a device count like 3 or a percentage like 5%") from exc


def parse_waves(text: str) -> PercentWaves | ExponentialWaves:
    """``"10,50,100"`` -> cumulative percentages; ``"exp:10x2"`` -> 10 devices, then doubling."""
    raw = text.strip().lower().replace(" ", "")
    try:
        if raw.startswith("exp:"):
            initial, _, factor = raw[4:].partition("x")
            return ExponentialWaves(initial=int(initial), factor=float(factor or 2.0))
        return PercentWaves(steps=[float(part.rstrip("%")) for part in raw.split(",")])
    except (ValueError, ValidationError) as exc:
        raise FleetConfigError(
            f"invalid waves {text!r}: use increasing percentages ending at 100 (10,50,100) "
            "or exp:INITIALxFACTOR (exp:10x2)"
        ) from exc


def parse_metrics(text: str) -> list[CanaryMetric]:
    """``"latency,error_rate,confidence"`` -> those canary metrics; raise `FleetConfigError` for unknown names."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    try:
        return [CanaryMetric(name) for name in names]
    except ValueError:
        known = ", ".join(m.value for m in CanaryMetric)
        raise FleetConfigError(f"invalid metrics {text!r}: use names from {known}") from None


def gate_from_cli(
    *,
    after: str = "every_wave",
    soak_s: float = 0.0,
    retry_interval_s: float = 300.0,
    max_wait_s: float = 3600.0,
    min_devices: int | None = None,
    min_requests: int | None = None,
    min_requests_per_device: int | None = None,
    critical: str | None = None,
) -> GateSpec:
    """A `GateSpec` from CLI options; ``None`` keeps `CanaryConfig`'s default. ``critical`` names the metrics
    whose failure fails the gate (the others only count in the score); raise `FleetConfigError`."""
    settings: dict[str, object] = {}
    if min_devices is not None:
        settings["min_devices"] = min_devices
    if min_requests is not None:
        settings["min_requests"] = min_requests
    if min_requests_per_device is not None:
        settings["min_requests_per_device"] = min_requests_per_device
    if critical is not None:
        chosen = set(parse_metrics(critical))
        settings["metrics"] = {
            metric: MetricSpec(enabled=spec.enabled, critical=metric in chosen, weight=spec.weight)
            for metric, spec in DEFAULT_METRICS.items()
        }
    try:
        return GateSpec(
            after=after,  # type: ignore[arg-type]
            soak_s=soak_s,
            retry_interval_s=retry_interval_s,
            max_wait_s=max_wait_s,
            canary=CanaryConfig.model_validate(settings),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "gate"
        raise FleetConfigError(f"invalid gate: {where}: {first['msg']}") from exc


def plan_from_cli(
    model_version: str,
    *,
    selector: str = "",
    canary: str = "5%",
    waves: str = "10,50,100",
    max_failure_rate: float | None = 0.05,
    max_failures: int | None = None,
    min_devices: int = 10,
    success_threshold: float = 0.95,
    approval: str = "none",
    gate: bool = True,
    device_timeout_s: float = 1800.0,
    gate_spec: GateSpec | None = None,
) -> RolloutPlan:
    """Build a plan from ``edgefleet rollout start MODEL:VERSION`` options; raise `FleetConfigError`.

    ``gate_spec`` (see `gate_from_cli`) replaces the default gate when ``gate`` is true.
    """
    model, sep, version = model_version.partition(":")
    if not sep or not model or not version:
        raise FleetConfigError(f"expected MODEL:VERSION, got {model_version!r}")
    try:
        return RolloutPlan(
            model=model,
            version=version,
            selector=selector,
            canary=parse_canary(canary),
            waves=parse_waves(waves),
            success_threshold=success_threshold,
            approval=approval,  # type: ignore[arg-type]  # validated by pydantic
            failure=FailureThreshold(max_rate=max_failure_rate, max_count=max_failures, min_devices=min_devices),
            gate=(gate_spec or GateSpec()) if gate else None,
            device_timeout_s=device_timeout_s,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "plan"
        raise FleetConfigError(f"invalid rollout plan: {where}: {first['msg']}") from exc
