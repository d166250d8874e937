"""``edgefleet models list`` through the hub's REST API."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hub.app import Hub
from hub.auth import Role
from hub.cli import app
from hub.config import HubSettings
from tests.hub.cli.live_hub import serving


def test_models_are_listed_with_their_versions_for_a_viewer(tmp_path: Path) -> None:
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))  # not started: storage and REST only
    hub.registry.add_version("digits", "1.0.0")
    hub.registry.add_version("digits", "1.2.0")
    runner = CliRunner()
    try:
        with serving(hub, Role.VIEWER) as hub_args:
            listed = runner.invoke(app, [*hub_args, "models", "list", "--json"])
            table = runner.invoke(app, [*hub_args, "models", "list"])
            no_token = {"EDGEFLEET_TOKEN": "", "EDGEFLEET_CLI_CONFIG": str(tmp_path / "none.toml")}
            anonymous = runner.invoke(app, [*hub_args[:2], "models", "list"], env=no_token)
    finally:
        hub.db.close()
    assert listed.exit_code == 0, listed.output
    assert [(m["name"], m["versions"]) for m in json.loads(listed.stdout)] == [("digits", ["1.2.0", "1.0.0"])]
    assert table.exit_code == 0 and "1.2.0, 1.0.0" in table.stdout
    assert anonymous.exit_code == 1 and anonymous.output.startswith("error: HTTP 401: ")
