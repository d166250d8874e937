"""Canary reports and the rollout gate from the window aggregates (hub/monitoring/canary_windows.py), on SQLite
and PostgreSQL: the same verdicts and metric values as from the raw batches, whole windows for time bounds,
input drift pooled over the cohort windows."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from fleet.canary import CanaryMetric, CanaryReport, MetricResult, Verdict
from fleet.rollout import RequestGate, new_rollout
from fleet.rollout_plan import plan_from_cli
from fleet.wire.messages import TelemetryBatch
from hub.monitoring.queries import RolloutView, canary_report, canary_report_for, split_rollout_batches
from hub.monitoring.registry_source import RegistrySource
from hub.registry import Database, Registry
from hub.rollouts.gate import canary_gate
from tests.hub.monitoring.telemetry_scenario import BASELINE, CANARY, CANDIDATE, MODEL, scenario


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    db = Database(database_url)
    yield Registry(db)
    db.close()


def _store(registry: Registry, window_s: float, **kw: Any) -> tuple[list[TelemetryBatch], RolloutView]:
    dump = scenario(**kw)
    batches = [TelemetryBatch.model_validate(b) for b in dump["batches"]]
    registry.store_telemetry(batches[:50], aggregate_window_s=window_s)  # two writes: rows are updated too
    registry.store_telemetry(batches[50:], aggregate_window_s=window_s)
    registry.prune_telemetry(max_rows=0)  # reports read only the aggregates; the batches stay in memory
    return batches, RolloutView.model_validate(dump["rollouts"]["ro-1"])


def _from_batches(view: RolloutView, batches: list[TelemetryBatch]) -> CanaryReport:
    canary, baseline = split_rollout_batches(view, batches)
    return canary_report(canary, baseline, candidate_version=view.candidate_version)


def _from_aggregates(registry: Registry, view: RolloutView) -> CanaryReport:
    return canary_report_for(RegistrySource(registry, rollout=lambda _r: view), view.rollout_id)


def _close(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    return a == b


def _same_metric(mine: MetricResult, theirs: MetricResult) -> None:
    assert (mine.metric, mine.verdict, mine.n_canary, mine.n_baseline) == (
        theirs.metric,
        theirs.verdict,
        theirs.n_canary,
        theirs.n_baseline,
    ), (mine.reason, theirs.reason)
    for field in ("canary_value", "baseline_value", "relative_change", "p_value", "effect_size"):
        assert _close(getattr(mine, field), getattr(theirs, field)), (mine.metric, field)
    assert mine.details.keys() == theirs.details.keys()
    assert all(_close(mine.details[k], theirs.details[k]) for k in mine.details), (mine.details, theirs.details)


def _same_report(mine: CanaryReport, theirs: CanaryReport) -> None:
    """Equal verdicts and values; input drift, merged from window sketches rather than batch sketches, agrees
    on which features drifted (its KS statistics are within the sketches' error of each other)."""
    assert (mine.verdict, mine.canary_devices, mine.baseline_devices) == (
        theirs.verdict,
        theirs.canary_devices,
        theirs.baseline_devices,
    )
    assert mine.device_classes == theirs.device_classes and mine.reasons == theirs.reasons
    assert mine.score == pytest.approx(theirs.score)
    assert [m.metric for m in mine.metrics] == [m.metric for m in theirs.metrics]
    for a, b in zip(mine.metrics, theirs.metrics, strict=True):
        _same_metric(a, b)


@pytest.mark.parametrize("slow_candidate", [False, True])
def test_canary_report_from_the_aggregates_is_the_report_from_the_batches(
    registry: Registry, slow_candidate: bool
) -> None:
    batches, view = _store(registry, 60.0, slow_candidate=slow_candidate)
    theirs = _from_batches(view, batches)
    assert theirs.verdict == (Verdict.FAIL if slow_candidate else Verdict.PASS)
    _same_report(_from_aggregates(registry, view), theirs)
    later = view.model_copy(update={"window_start": 1061.0})  # the first batch window ends at 1060
    _same_report(_from_aggregates(registry, later), _from_batches(later, batches))


def test_gate_from_the_aggregates_is_the_gate_from_the_batches(registry: Registry) -> None:
    batches, _ = _store(registry, 60.0, slow_candidate=True)
    baseline = sorted({b.device_id for b in batches} - set(CANARY))
    request = RequestGate(
        request_id="g1",
        model=MODEL,
        version=CANDIDATE,
        wave=0,
        attempt=1,
        since=1061.0,
        candidates=tuple(CANARY[:8]),
        baseline=tuple(baseline[:15]),
    )
    snapshot = new_rollout("ro-g", plan_from_cli(f"{MODEL}:{CANDIDATE}", canary="5%", waves="100"), [], now=0.0)
    mine = canary_gate(registry)(request, snapshot)
    recent = [b for b in batches if b.window_end >= request.since]
    theirs = canary_report(
        [b for b in recent if b.device_id in request.candidates and b.version == CANDIDATE],
        [b for b in recent if b.device_id in request.baseline and b.version != CANDIDATE],
        candidate_version=CANDIDATE,
    )
    assert isinstance(mine, CanaryReport) and (mine.canary_devices, mine.baseline_devices) == (8, 15)
    assert theirs.verdict == Verdict.FAIL
    _same_metric(_metric(mine, CanaryMetric.LATENCY), _metric(theirs, CanaryMetric.LATENCY))
    for metric in CanaryMetric:  # input drift pools all 10 candidate devices' windows: counted, below
        if metric != CanaryMetric.DRIFT:
            _same_metric(_metric(mine, metric), _metric(theirs, metric))
    assert _metric(mine, CanaryMetric.DRIFT).n_canary == len(CANARY)
    assert _metric(mine, CanaryMetric.DRIFT).verdict == _metric(theirs, CanaryMetric.DRIFT).verdict


def _metric(report: CanaryReport, metric: CanaryMetric) -> MetricResult:
    return next(m for m in report.metrics if m.metric == metric)


def test_a_time_bound_inside_a_window_takes_the_whole_window(registry: Registry) -> None:
    """Windows of 120 s: batches 1000-1060 and 1060-1120 share the window starting at 960. From 1100 on, the
    batches hold two windows per device; the aggregates hold that device window whole, so three."""
    batches, view = _store(registry, 120.0)
    later = view.model_copy(update={"window_start": 1100.0})
    mine = _metric(_from_aggregates(registry, later), CanaryMetric.ERROR_RATE)
    theirs = _metric(_from_batches(later, batches), CanaryMetric.ERROR_RATE)
    assert (mine.details["canary_requests"], theirs.details["canary_requests"]) == (10 * 3 * 200, 10 * 2 * 200)
    gone = view.model_copy(update={"window_start": 1181.0})  # after every batch: nothing, from either
    assert _from_aggregates(registry, gone).verdict == Verdict.INCONCLUSIVE
    assert _from_aggregates(registry, gone).reasons == _from_batches(gone, batches).reasons


def test_no_aggregates_no_canary(registry: Registry) -> None:
    view = RolloutView(rollout_id="ro-0", model=MODEL, candidate_version=CANDIDATE, baseline_version=BASELINE)
    report = _from_aggregates(registry, view)
    assert report.verdict == Verdict.INCONCLUSIVE and report.reasons == ["no canary telemetry: nothing to judge"]
