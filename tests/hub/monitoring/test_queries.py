"""Drift and canary reports from stored telemetry (hub/monitoring_queries.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fleet.canary import CanaryMetric, Verdict
from fleet.drift import DriftReport
from fleet.telemetry import ReferenceProfile, TelemetryAggregate
from fleet.wire.messages import TelemetryBatch
from hub.errors import NotFoundError
from hub.monitoring.queries import (
    FileSource,
    RolloutView,
    canary_report_for,
    drift_report,
    drift_report_for,
    split_rollout_batches,
    version_aggregate,
)
from hub.monitoring.registry_source import RegistrySource
from tests.hub.monitoring.telemetry_scenario import BASELINE, CANARY, CANDIDATE, MODEL, add_scenario_devices, scenario

if TYPE_CHECKING:
    pass


def _source(tmp_path: Path, **kw: object) -> FileSource:
    path = tmp_path / "telemetry.json"
    path.write_text(json.dumps(scenario(**kw)))  # type: ignore[arg-type]
    return FileSource(path)


def test_drift_per_device_class_and_label_cohort(tmp_path: Path) -> None:
    source = _source(tmp_path, jetson_shift=1.0)
    report = drift_report_for(source, MODEL, BASELINE, by=["target"], selectors={"eu": "region=eu"})
    cohorts = {c.cohort: c for c in report.cohorts}
    assert set(cohorts) == {"all", "target=rpi4-arm64", "target=jetson-orin", "eu"}
    jetson, rpi = cohorts["target=jetson-orin"], cohorts["target=rpi4-arm64"]
    assert jetson.devices == 6 and rpi.devices == 14  # baseline devices only: the canary runs 1.1
    assert [f.feature for f in jetson.features if f.drifted] == ["x"]
    assert jetson.dataset_drift is True and rpi.dataset_drift is False
    assert cohorts["eu"].devices == 10
    assert report.model == MODEL and report.version == BASELINE


def test_drift_of_other_version_ignores_baseline_batches(tmp_path: Path) -> None:
    source = _source(tmp_path)
    dump = json.loads((tmp_path / "telemetry.json").read_text())
    batches = [TelemetryBatch.model_validate(b) for b in dump["batches"]]
    report = drift_report(
        ReferenceProfile.model_validate(dump["reference"]), batches, model=MODEL, version=CANDIDATE, by=[]
    )
    assert [c.cohort for c in report.cohorts] == ["all"]
    assert report.cohorts[0].devices == len(CANARY)
    assert report.cohorts[0].dataset_drift is False
    assert source.telemetry(MODEL, CANDIDATE, since=1100, until=1150).batches[0].window_end == 1120.0


def test_canary_report_passes_an_equal_candidate_and_fails_a_slow_one(tmp_path: Path) -> None:
    equal = canary_report_for(_source(tmp_path), "ro-1")
    assert equal.verdict == Verdict.PASS, equal.reasons
    assert (equal.canary_devices, equal.baseline_devices) == (10, 20)
    shadow = next(m for m in equal.metrics if m.metric == CanaryMetric.SHADOW_AGREEMENT)
    assert shadow.verdict == Verdict.PASS and shadow.n_canary == 20 * 3 * 20
    slow = canary_report_for(_source(tmp_path, slow_candidate=True), "ro-1")
    assert slow.verdict == Verdict.FAIL
    latency = next(m for m in slow.metrics if m.metric == CanaryMetric.LATENCY)
    assert latency.verdict == Verdict.FAIL and latency.relative_change == pytest.approx(0.6, abs=0.1)


def test_split_rollout_batches_respects_devices_versions_and_window(tmp_path: Path) -> None:
    source = _source(tmp_path)
    batches = source.telemetry(MODEL).batches
    view = RolloutView(
        rollout_id="r",
        model=MODEL,
        candidate_version=CANDIDATE,
        canary_device_ids=CANARY[:2],
        window_start=1000,
        window_end=1120,
    )
    canary, baseline = split_rollout_batches(view, batches)
    assert {b.device_id for b in canary} == set(CANARY[:2]) and len(canary) == 4
    assert all(b.version == BASELINE and b.window_end <= 1120 for b in baseline)
    assert len(baseline) == 20 * 2


def test_unknown_things_are_not_found(tmp_path: Path) -> None:
    source = _source(tmp_path)
    with pytest.raises(NotFoundError):
        canary_report_for(source, "nope")


def test_registry_source_reads_telemetry_and_labels(tmp_path: Path) -> None:
    from hub.registry import Database, Registry

    registry = Registry(Database(f"sqlite:///{tmp_path / 'registry.db'}"))
    dump = scenario()
    for device in ("rpi-07", "rpi-08", "jet-05"):  # provisioning hashes a secret: keep it to a few
        registry.provision_device(
            device, "jetson-orin" if device.startswith("jet") else "rpi4-arm64", dump["labels"][device]
        )
    batches = [TelemetryBatch.model_validate(b) for b in dump["batches"]]
    assert registry.record_telemetry(batches) == len(batches)
    reference = ReferenceProfile.model_validate(dump["reference"])
    view = RolloutView.model_validate(dump["rollouts"]["ro-1"])
    source = RegistrySource(
        registry,
        reference=lambda m, v: reference if (m, v) == (MODEL, BASELINE) else None,
        rollout=lambda r: view if r == "ro-1" else None,
    )
    assert len(source.telemetry(MODEL, CANDIDATE).batches) == len(CANARY) * 3
    assert source.device_labels() == {
        "rpi-07": {"region": "us"},
        "rpi-08": {"region": "eu"},
        "jet-05": {"region": "us"},
    }
    report = drift_report_for(source, MODEL, BASELINE, selectors={"us": "region=us"})
    cohorts = {c.cohort: c for c in report.cohorts}
    assert set(cohorts) == {"all", "target=rpi4-arm64", "target=jetson-orin", "us"}
    assert cohorts["us"].devices == 2
    assert canary_report_for(source, "ro-1").verdict == Verdict.PASS
    with pytest.raises(NotFoundError, match="reference"):
        source.reference(MODEL, CANDIDATE)
    with pytest.raises(NotFoundError):
        source.rollout("dep-unknown")


def test_one_devices_unusable_stored_rows_are_skipped_and_counted_never_failing_a_report(database_url: str) -> None:
    """Rows stored before validation covered everything: odd histogram edges, a payload that no longer
    parses. Drift, canary and pruning go on without them, and the drift report (from the batches, as a
    selector of more than one label value asks) says how many were left out; the canary reads the aggregates,
    which never held them."""
    from hub.registry import Database, Registry, TelemetryRecord

    db = Database(database_url)
    registry = Registry(db)
    try:
        dump = scenario()
        batches = [TelemetryBatch.model_validate(b) for b in dump["batches"]]
        registry.store_telemetry(batches)
        sample = next(b for b in batches if b.version == CANDIDATE)
        odd_edges = sample.model_dump(mode="json") | {
            "batch_id": "legacy-odd-edges",
            "latency_ms": {"edges": [1.0, 2.0], "counts": [1, 2, 3], "total": 6.0, "schema_version": 1},
        }
        unparseable = sample.model_dump(mode="json") | {"batch_id": "legacy-no-window", "window_end": None}
        with db.session() as session:
            for payload in (odd_edges, unparseable):
                session.add(
                    TelemetryRecord(
                        batch_id=payload["batch_id"],
                        device_id=sample.device_id,
                        target=sample.target,
                        model=sample.model,
                        version=sample.version,
                        window_start=sample.window_start,
                        window_end=sample.window_end,
                        requests=sample.requests,
                        errors=sample.errors,
                        payload=payload,
                    )
                )
        reference = ReferenceProfile.model_validate(dump["reference"])
        view = RolloutView.model_validate(dump["rollouts"]["ro-1"])
        source = RegistrySource(registry, reference=lambda _m, _v: reference, rollout=lambda _r: view)
        drift = drift_report_for(source, MODEL, CANDIDATE, selectors={"eu-us": "region in (eu,us)"})
        canary = canary_report_for(source, "ro-1")
        assert drift.skipped_batches == 2 and canary.skipped_batches == 0
        assert canary.verdict == Verdict.PASS
        assert len(registry.telemetry_batches(MODEL, CANDIDATE)) == len(CANARY) * 3
        assert registry.prune_telemetry(max_rows=0) == len(batches) + 2
        assert sum(r.batches for v in (BASELINE, CANDIDATE) for r in registry.windows.rows(MODEL, v)) == len(batches)
    finally:
        db.close()


def test_a_file_with_a_bad_batch_still_reports(tmp_path: Path) -> None:
    dump = scenario()
    dump["batches"][0]["confidence"] = {"edges": [0.5], "counts": [1, 1], "total": 0.7, "schema_version": 1}
    path = tmp_path / "telemetry.json"
    path.write_text(json.dumps(dump))
    report = canary_report_for(FileSource(path), "ro-1")
    assert report.skipped_batches == 1


def test_drift_by_target_reads_the_window_aggregates_and_matches_the_batches(database_url: str) -> None:
    """The aggregate path gives the report the batch path gives, and still does once the raw batches are
    pruned."""
    from hub.registry import Database, Registry

    db = Database(database_url)
    registry = Registry(db)
    try:
        dump = scenario(jetson_shift=1.0)
        registry.store_telemetry([TelemetryBatch.model_validate(b) for b in dump["batches"]])
        reference = ReferenceProfile.model_validate(dump["reference"])
        source = RegistrySource(registry, reference=lambda _m, _v: reference)
        from_aggregates = drift_report_for(source, MODEL, BASELINE)
        from_batches = drift_report(
            reference,
            registry.telemetry_batches(MODEL, BASELINE),
            model=MODEL,
            version=BASELINE,
            device_labels=source.device_labels(),
        )
        assert source.target_aggregates(MODEL, BASELINE)
        assert from_aggregates.drifted_cohorts == from_batches.drifted_cohorts
        assert "target=jetson-orin" in from_batches.drifted_cohorts
        mine = {c.cohort: c for c in from_aggregates.cohorts}
        theirs = {c.cohort: c for c in from_batches.cohorts}
        assert set(mine) == set(theirs)
        for name, cohort in theirs.items():
            assert mine[name].devices == cohort.devices
            assert [f.drifted for f in mine[name].features] == [f.drifted for f in cohort.features]
        registry.prune_telemetry(max_rows=0)
        assert registry.telemetry_count() == 0
        pruned = {c.cohort: c for c in drift_report_for(source, MODEL, BASELINE).cohorts}
        assert {n: (c.devices, [f.drifted for f in c.features]) for n, c in pruned.items()} == {
            n: (c.devices, [f.drifted for f in c.features]) for n, c in mine.items()
        }
    finally:
        db.close()


def _cohorts(report: DriftReport) -> dict[str, tuple[int, int, list[bool | None]]]:
    return {c.cohort: (c.devices, c.requests, [f.drifted for f in c.features]) for c in report.cohorts}


def test_drift_by_label_reads_the_label_aggregates_and_matches_the_batches(database_url: str) -> None:
    """Label cohorts (alone or with target) and one-label selectors come from the label rows written at ingestion
    and match the batch path, also once the batches are pruned; a label some devices lack (its ``(none)`` cohort
    has no row) and other selectors read the batches."""
    from hub.registry import Database, Registry

    db = Database(database_url)
    registry = Registry(db)
    try:
        dump = scenario(jetson_shift=1.0)
        labels = {d: mine | ({"tier": "edge"} if d.startswith("jet") else {}) for d, mine in dump["labels"].items()}
        add_scenario_devices(registry, labels)
        registry.store_telemetry([TelemetryBatch.model_validate(b) for b in dump["batches"]])
        reference = ReferenceProfile.model_validate(dump["reference"])
        source = RegistrySource(registry, reference=lambda _m, _v: reference)
        batches = registry.telemetry_batches(MODEL, BASELINE)
        asks: list[dict[str, Any]] = [
            {"by": ["label:region"]},
            {"by": ["label:region", "target"]},
            {"by": ["target"], "selectors": {"eu": "region=eu", "edge": "tier=edge"}},
        ]
        from_aggregates = []
        for ask in asks:
            mine = drift_report_for(source, MODEL, BASELINE, **ask)
            theirs = drift_report(reference, batches, model=MODEL, version=BASELINE, device_labels=labels, **ask)
            assert _cohorts(mine) == _cohorts(theirs)
            assert mine.drifted_cohorts == theirs.drifted_cohorts
            from_aggregates.append(_cohorts(mine))
        assert from_aggregates[1]["label:region=eu,target=jetson-orin"][:2] == (3, 1800)  # 3 devices x 3 windows
        assert from_aggregates[2]["edge"][2] == [True, False]  # feature x drifts on the jetson devices
        fallback = drift_report_for(source, MODEL, BASELINE, by=["label:tier"], selectors={"not-eu": "region!=eu"})
        assert "label:tier=(none)" in _cohorts(fallback) and "not-eu" in _cohorts(fallback)
        registry.prune_telemetry(max_rows=0)
        assert registry.telemetry_count() == 0
        assert [_cohorts(drift_report_for(source, MODEL, BASELINE, **ask)) for ask in asks] == from_aggregates
    finally:
        db.close()


def test_a_versions_merged_telemetry_comes_from_the_window_aggregates(database_url: str) -> None:
    """`version_aggregate` (the console's distributions) equals merging every batch, and still answers once the
    raw batches are pruned: it read the aggregate rows."""
    from hub.registry import Database, Registry

    db = Database(database_url)
    registry = Registry(db)
    try:
        dump = scenario(jetson_shift=1.0)
        registry.store_telemetry([TelemetryBatch.model_validate(b) for b in dump["batches"]])
        source = RegistrySource(registry, reference=lambda _m, _v: ReferenceProfile.model_validate(dump["reference"]))
        expected = TelemetryAggregate.from_batches(registry.telemetry_batches(MODEL, BASELINE))
        registry.prune_telemetry(max_rows=0)
        merged = version_aggregate(source, MODEL, BASELINE)
        assert (merged.requests, merged.errors, merged.devices) == (
            expected.requests,
            expected.errors,
            expected.devices,
        )
        assert sorted(merged.sketches) == sorted(expected.sketches)
        for name, sketch in expected.sketches.items():
            assert merged.sketches[name].n == sketch.n
            assert merged.sketches[name].get_quantile(0.5) == pytest.approx(sketch.get_quantile(0.5), abs=0.1)
    finally:
        db.close()
