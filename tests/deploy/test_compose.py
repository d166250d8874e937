"""deploy/compose.yaml and the hub's systemd unit: well-formed, and every EDGEFLEET_* setting they give is one the
hub knows (Docker is not needed: the files are parsed, not run)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from hub.config import ENV_PREFIX, HubSettings

yaml = pytest.importorskip("yaml")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NOT_HUB_SETTINGS = {"ADMIN_TOKEN"}  # read by `hub serve` to create the first admin API token


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_the_services_and_each_agent_reads_a_provisioned_kit() -> None:
    services = _compose()["services"]
    assert {"mosquitto", "postgres", "hub", "provision", "agent-1", "agent-2", "agent-3"} <= set(services)
    provisioned = set(re.findall(r"\bcam-\d\b", services["provision"]["command"][0]))
    configs = {services[f"agent-{i}"]["command"][-1] for i in (1, 2, 3)}
    assert configs == {f"/kits/{device}/agent.toml" for device in provisioned}
    assert services["agent-1"]["depends_on"]["provision"]["condition"] == "service_completed_successfully"
    for name in ("hub", "provision", "agent-1"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_every_hub_variable_in_compose_is_a_hub_setting() -> None:
    environment = _compose()["services"]["hub"]["environment"]
    names = {
        key.removeprefix(ENV_PREFIX).lower()
        for key in environment
        if key.removeprefix(ENV_PREFIX) not in NOT_HUB_SETTINGS
    }
    assert names and names <= set(HubSettings.model_fields), names - set(HubSettings.model_fields)


def test_the_systemd_unit_runs_hub_serve_with_a_config_file() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((DEPLOY / "edgefleet-hub.service").read_text())
    exec_start = unit["Service"]["ExecStart"]
    assert exec_start.split()[1:4] == ["hub", "serve", "--config"]
    assert unit["Service"]["Environment"].split("=", 1)[0].removeprefix(ENV_PREFIX).lower() in HubSettings.model_fields
    assert unit["Service"]["NoNewPrivileges"] == "true"
