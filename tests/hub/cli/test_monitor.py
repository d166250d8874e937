"""``edgefleet drift report`` and ``edgefleet canary report`` (hub/cli/monitor.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from typer.testing import CliRunner

from fleet.canary import CanaryReport
from fleet.drift import DriftReport
from hub.cli import monitor as cli_monitor
from tests.hub.monitoring.telemetry_scenario import BASELINE, MODEL, scenario


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_monitor.register(app)
    return app


def _dump(tmp_path: Path, **kw: object) -> Path:
    path = tmp_path / "telemetry.json"
    path.write_text(json.dumps(scenario(**kw)))  # type: ignore[arg-type]
    return path


def test_drift_report_json_and_table(tmp_path: Path) -> None:
    dump = _dump(tmp_path, jetson_shift=1.0)
    runner = CliRunner()
    args = ["drift", "report", f"{MODEL}:{BASELINE}", "--telemetry", str(dump), "--cohort", "region=eu"]
    result = runner.invoke(_app(), [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = DriftReport.model_validate_json(result.stdout)
    assert {c.cohort for c in report.cohorts} == {"all", "target=rpi4-arm64", "target=jetson-orin", "region=eu"}
    assert "target=jetson-orin" in report.drifted_cohorts
    table = runner.invoke(_app(), args)
    assert table.exit_code == 0, table.output
    assert "DRIFT" in table.stdout and "target=jetson-orin: inputs drifted" in table.stdout


def test_drift_report_with_a_separate_reference_file(tmp_path: Path) -> None:
    dump = _dump(tmp_path)
    data = json.loads(dump.read_text())
    (tmp_path / "reference.json").write_text(json.dumps(data.pop("reference")))
    batches = tmp_path / "batches.jsonl"
    batches.write_text("\n".join(json.dumps(b) for b in data["batches"]))
    result = CliRunner().invoke(
        _app(),
        [
            "drift",
            "report",
            f"{MODEL}:{BASELINE}",
            "--telemetry",
            str(batches),
            "--reference",
            str(tmp_path / "reference.json"),
            "--by",
            "label:region",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    cohorts = {c.cohort for c in DriftReport.model_validate_json(result.stdout).cohorts}
    assert cohorts == {"all", "label:region=(none)"}  # a bare batch file carries no device labels


def test_canary_report(tmp_path: Path) -> None:
    runner = CliRunner()
    slow = runner.invoke(_app(), ["canary", "report", "ro-1", "--telemetry", str(_dump(tmp_path, slow_candidate=True))])
    assert slow.exit_code == 0, slow.output
    assert "rollout ro-1: FAIL" in slow.stdout and "latency (critical) fail" in slow.stdout
    ok = runner.invoke(_app(), ["canary", "report", "ro-1", "--telemetry", str(_dump(tmp_path)), "--json"])
    assert CanaryReport.model_validate_json(ok.stdout).verdict.value == "pass"


def test_errors_are_reported_not_raised(tmp_path: Path) -> None:
    runner = CliRunner()
    dump = _dump(tmp_path)
    missing = runner.invoke(_app(), ["canary", "report", "nope", "--telemetry", str(dump)])
    assert missing.exit_code == 1 and "rollout nope" in missing.output
    bad = runner.invoke(_app(), ["drift", "report", "digits", "--telemetry", str(dump)])
    assert bad.exit_code == 1 and "MODEL:VERSION" in bad.output
    (tmp_path / "hub").mkdir()
    no_ref = runner.invoke(_app(), ["drift", "report", "digits:1.0", "--data-dir", str(tmp_path / "hub")])
    assert no_ref.exit_code == 1 and "reference" in no_ref.output


def test_reports_read_a_hub_data_dir_with_bundle_references_and_rollouts(tmp_path: Path) -> None:
    """Against the hub's own storage: the reference comes from the version's bundle, the rollout from the
    rollout table, telemetry from the registry (SQLite in --data-dir, or --database-url)."""
    from fleet.rollout_plan import plan_from_cli
    from hub.app import Hub
    from hub.config import HubSettings
    from hub.registry.rollouts import RolloutStore
    from hub.rollouts.operations import create_rollout
    from tests.hub.monitoring.monitoring_fleet import VERSIONS, hub_scenario, install

    data = hub_scenario(jetson_shift=1.0, now=time.time() + 240)  # windows begin after the rollout
    data_dir = tmp_path / "hub"
    hub = Hub(HubSettings(data_dir=data_dir))  # not started: storage only
    try:
        install(hub, data, tmp_path)
        hub.registry.record_telemetry(data["batches"])
        plan = plan_from_cli(f"{MODEL}:{VERSIONS['1.1']}", canary="5%", waves="100")
        create_rollout(RolloutStore(hub.db), hub.registry, plan, rollout_id="ro-cli")
        database_url = hub.settings.resolved_database_url()
    finally:
        hub.db.close()
    runner = CliRunner()
    drift = runner.invoke(
        _app(), ["drift", "report", f"{MODEL}:{VERSIONS['1.0']}", "--data-dir", str(data_dir), "--json"]
    )
    assert drift.exit_code == 0, drift.output
    assert "target=jetson-orin" in DriftReport.model_validate_json(drift.stdout).drifted_cohorts
    elsewhere = runner.invoke(
        _app(),
        [
            "drift",
            "report",
            f"{MODEL}:{VERSIONS['1.0']}",
            "--data-dir",
            str(tmp_path / "empty"),
            "--database-url",
            database_url,
            "--json",
        ],
    )
    assert elsewhere.exit_code == 1 and "no drift reference" in elsewhere.output  # bundles live in data dir
    canary = runner.invoke(_app(), ["canary", "report", "ro-cli", "--data-dir", str(data_dir), "--json"])
    assert canary.exit_code == 0, canary.output
    report = CanaryReport.model_validate_json(canary.stdout)
    assert report.canary_devices > 0 and report.baseline_devices > 0
    missing = runner.invoke(_app(), ["canary", "report", "nope", "--database-url", database_url])
    assert missing.exit_code == 1 and "does not exist" in missing.output
