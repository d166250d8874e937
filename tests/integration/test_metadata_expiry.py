"""A fleet left alone for days keeps updating: the running hub re-signs TUF metadata before it expires, and a
root kept offline is signed with the offline key ahead of time. Hub, CLI and agents share one moved clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from agent.daemon import Agent
from fleet.rollout import RolloutState
from fleet.rollout_plan import plan_from_cli
from hub.cli import app
from tests.integration.fleet_harness import Harness

DAY = timedelta(days=1)


def _edgefleet(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout + result.stderr


def _tuf_gauges(harness: Harness) -> dict[tuple[str, str], float]:
    exposition = harness.hub.monitoring.exposition().decode()
    return {
        (sample.name, sample.labels.get("role", "")): sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name.startswith("edgefleet_tuf_")
        for sample in family.samples
    }


def _roll_out(harness: Harness, version: str, agents: list[Agent], rollout_id: str) -> None:
    rollouts = harness.hub.rollouts
    assert rollouts is not None
    plan = plan_from_cli(f"digits:{version}", canary="1", waves="100", gate=False, min_devices=1, device_timeout_s=60)
    rollouts.start_rollout(plan, rollout_id=rollout_id)
    snapshot = rollouts.wait(rollout_id, lambda s: s.final, 90)
    assert snapshot.state == RolloutState.COMPLETED, f"{snapshot.state}: {snapshot.reason}; {harness.detail(agents[0])}"
    for agent in agents:
        assert agent.service.predict([[0.0] * 64])["version"] == version


@pytest.mark.parametrize("days", [2, 100, 400])
def test_a_version_published_today_rolls_out_to_every_device_days_later(harness: Harness, days: int) -> None:
    harness.publish("1.0.0")
    agents = [harness.agent(f"d{i}") for i in range(3)]
    assert set(harness.deploy("1.0.0", agents).values()) == {"done"}
    harness.publish("1.1.0")  # registered today, rolled out after the hub ran unattended
    data_dir = str(harness.hub.settings.data_dir)
    with time_machine.travel(datetime.now(UTC) + days * DAY, tick=True):
        assert min(harness.hub.tuf.seconds_to_expiry().values()) < 0  # what devices would refuse
        assert harness.hub.metadata_refresher.refresh_now()  # the hub's timer firing in the moved time
        gauges = _tuf_gauges(harness)
        assert gauges[("edgefleet_tuf_metadata_expiry_seconds", "timestamp")] > 0.5 * 86400
        assert gauges[("edgefleet_tuf_metadata_expiry_seconds", "root")] > 180 * 86400
        assert gauges[("edgefleet_tuf_root_keys_online", "")] == 1
        code, output = _edgefleet("keys", "status", "--data-dir", data_dir)
        assert code == 0, output
        _roll_out(harness, "1.1.0", agents, f"ro-{days}d")


def test_an_offline_root_signed_ahead_of_expiry_keeps_the_fleet_updating(harness: Harness, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    harness.publish("1.0.0")
    agents = [harness.agent("o0"), harness.agent("o1")]
    assert set(harness.deploy("1.0.0", agents).values()) == {"done"}
    data_dir = str(harness.hub.settings.data_dir)
    root_key = tmp_path_factory.mktemp("offline") / "root.pem"
    code, output = _edgefleet("keys", "export-root", "--out", str(root_key), "--data-dir", data_dir)
    assert code == 0, output
    start = datetime.now(UTC)
    with time_machine.travel(start + 200 * DAY, tick=True):
        assert harness.hub.metadata_refresher.refresh_now()
        gauges = _tuf_gauges(harness)
        assert gauges[("edgefleet_tuf_root_keys_online", "")] == 0
        assert gauges[("edgefleet_tuf_metadata_expiry_seconds", "root")] < 170 * 86400  # the hub could not re-sign
        code, output = _edgefleet("keys", "status", "--data-dir", data_dir)
        assert code == 1 and "keys are offline" in output
        code, output = _edgefleet("keys", "sign-root", "--root-key", str(root_key), "--data-dir", data_dir)
        assert code == 0, output
    harness.publish("1.1.0")
    with time_machine.travel(start + 400 * DAY, tick=True):
        assert harness.hub.metadata_refresher.refresh_now()
        assert _tuf_gauges(harness)[("edgefleet_tuf_metadata_expiry_seconds", "root")] > 150 * 86400
        assert set(harness.deploy("1.1.0", agents).values()) == {"done"}, harness.detail(agents[0])
    assert all((a.data_dir / "tuf" / "root_history" / "2.root.json").exists() for a in agents)
