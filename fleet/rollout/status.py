"""`summarize`: what ``edgefleet rollout status ID`` shows, read off a snapshot (pure; JSON-ready)."""

from __future__ import annotations

from collections import defaultdict

from pydantic import BaseModel

from fleet.rollout.snapshot import (
    GateProgress,
    GateVerdictRecord,
    Phase,
    RolloutSnapshot,
    allowed_commands,
    population,
    schedule,
    wave_name,
)
from fleet.rollout.states import Command, RolloutState


class PhaseCounts(BaseModel):
    """Devices per phase."""

    pending: int = 0
    dispatched: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    current: int = 0
    skipped: int = 0
    removed: int = 0

    def add(self, phase: Phase) -> None:
        setattr(self, phase.value, getattr(self, phase.value) + 1)


class WaveProgress(BaseModel):
    """One wave: how many devices it should reach in total and how its own devices are doing."""

    wave: int
    name: str
    cumulative_target: int
    devices: PhaseCounts


class RolloutStatus(BaseModel):
    """What ``edgefleet rollout status ID`` shows: overall, per wave and per device class."""

    rollout_id: str
    model: str
    version: str
    state: RolloutState
    reason: str
    cause: str
    """Why it last paused or aborted: the gate's verdict and reasons, a failure threshold, an operator."""
    wave: int
    wave_name: str
    wave_count: int
    on_version_percent: float
    totals: PhaseCounts
    waves: list[WaveProgress]
    classes: dict[str, PhaseCounts]
    gate: GateProgress | None
    gate_verdicts: list[GateVerdictRecord]
    allowed_commands: list[Command]
    updated_at: float


def summarize(snapshot: RolloutSnapshot) -> RolloutStatus:
    """Progress of a rollout per wave and per device class (pure; JSON-ready)."""
    targets = schedule(snapshot)
    totals = PhaseCounts()
    classes: dict[str, PhaseCounts] = defaultdict(PhaseCounts)
    per_wave: dict[int, PhaseCounts] = defaultdict(PhaseCounts)
    for record in snapshot.devices.values():
        totals.add(record.phase)
        classes[record.device_class].add(record.phase)
        if record.wave is not None:
            per_wave[record.wave].add(record.phase)
    first = snapshot.plan.first_wave
    waves = [
        WaveProgress(wave=wave, name=wave_name(wave), cumulative_target=targets[wave], devices=per_wave[wave])
        for wave in range(first, len(targets))
    ]
    denominator = population(snapshot) + totals.current
    on_version = totals.succeeded + totals.current
    return RolloutStatus(
        rollout_id=snapshot.rollout_id,
        model=snapshot.plan.model,
        version=snapshot.plan.version,
        state=snapshot.state,
        reason=snapshot.reason,
        cause=snapshot.cause,
        wave=snapshot.wave,
        wave_name=wave_name(snapshot.wave),
        wave_count=len(targets) - first,
        on_version_percent=round(100.0 * on_version / denominator, 2) if denominator else 100.0,
        totals=totals,
        waves=waves,
        classes=dict(sorted(classes.items())),
        gate=snapshot.gate,
        gate_verdicts=snapshot.gate_verdicts,
        allowed_commands=allowed_commands(snapshot),
        updated_at=snapshot.updated_at,
    )
