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
    answer = json.loads(ok.stdout)
    assert answer.pop("gate_verdicts") == []  # a dump has no gate history
    assert CanaryReport.model_validate(answer).verdict.value == "pass"


def test_errors_are_reported_not_raised(tmp_path: Path) -> None:
    runner = CliRunner()
    dump = _dump(tmp_path)
    missing = runner.invoke(_app(), ["canary", "report", "nope", "--telemetry", str(dump)])
    assert missing.exit_code == 1 and "rollout nope" in missing.output
    bad = runner.invoke(_app(), ["drift", "report", "digits", "--telemetry", str(dump)])
    assert bad.exit_code == 1 and "MODEL:VERSION" in bad.output


def test_reports_come_from_the_hub_over_rest_with_the_rollouts_own_gate_settings(tmp_path: Path) -> None:
    """Against a hub's REST API: the reference comes from the version's bundle, the rollout and its gate
    settings from the rollout table, telemetry from the registry."""
    from fleet.rollout_plan import gate_from_cli, plan_from_cli
    from hub.app import Hub
    from hub.cli import app
    from hub.config import HubSettings
    from hub.registry.rollouts import RolloutStore
    from hub.rollouts.operations import create_rollout
    from tests.hub.cli.live_hub import serving
    from tests.hub.monitoring.monitoring_fleet import VERSIONS, hub_scenario, install

    data = hub_scenario(jetson_shift=1.0, now=time.time() + 240)  # windows begin after the rollout
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))  # not started: storage and REST only
    install(hub, data, tmp_path)
    hub.registry.record_telemetry(data["batches"])
    gate = gate_from_cli(min_devices=2, min_requests=1, min_requests_per_device=1)
    plan = plan_from_cli(f"{MODEL}:{VERSIONS['1.1']}", canary="5%", waves="100", gate_spec=gate)
    create_rollout(RolloutStore(hub.db), hub.registry, plan, rollout_id="ro-cli")
    runner = CliRunner()
    try:
        with serving(hub) as hub_args:
            drift = runner.invoke(app, [*hub_args, "drift", "report", f"{MODEL}:{VERSIONS['1.0']}", "--json"])
            canary = runner.invoke(app, [*hub_args, "canary", "report", "ro-cli", "--json"])
            table = runner.invoke(app, [*hub_args, "canary", "report", "ro-cli"])
            missing = runner.invoke(app, [*hub_args, "canary", "report", "nope"])
    finally:
        hub.db.close()
    assert drift.exit_code == 0, drift.output
    assert "target=jetson-orin" in DriftReport.model_validate_json(drift.stdout).drifted_cohorts
    assert canary.exit_code == 0, canary.output
    answer = json.loads(canary.stdout)
    assert answer["gate_verdicts"] == []  # the hub never ran this rollout's gate
    report = CanaryReport.model_validate({k: v for k, v in answer.items() if k != "gate_verdicts"})
    assert report.canary_devices > 0 and report.baseline_devices > 0
    assert report.config.min_devices == 2  # the rollout's own gate settings, not the defaults
    assert table.exit_code == 0 and "rollout ro-cli" in table.stdout
    assert missing.exit_code == 1 and missing.output.strip() == "error: HTTP 404: deployment nope does not exist"
