"""``edgefleet devices add|rekey|list|show|label|remove`` against a started hub's REST API over HTTP."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from agent.config import AgentConfig
from hub.app import Hub
from hub.auth import Role
from hub.cli import app
from hub.config import HubSettings
from tests.hub.auth.clients import token_for
from tests.hub.cli.live_hub import serving


def test_provision_label_and_remove_a_device(tmp_path: Path) -> None:
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))
    hub.start()
    runner = CliRunner()
    kit = tmp_path / "kits" / "cam-1"
    try:
        with serving(hub) as hub_args:

            def cli(*args: str) -> dict:  # type: ignore[type-arg]
                result = runner.invoke(app, [*hub_args, *args, "--json"])
                assert result.exit_code == 0, result.output
                return json.loads(result.stdout)

            add = ["devices", "add", "cam-1", "--target", "x86-onnx-cpu", "--label", "site=north", "--out", str(kit)]
            added = cli(*add)
            assert added["files"] == ["agent.toml", "device.secret", "root.json"]
            config = AgentConfig.load(kit / "agent.toml")
            assert config.device_id == "cam-1" and config.broker_url == hub.broker_address.url
            assert hub.registry.check_device_secret("cam-1", config.secret())
            assert stat.S_IMODE(kit.stat().st_mode) == 0o700
            assert stat.S_IMODE((kit / "device.secret").stat().st_mode) == 0o600
            again = runner.invoke(app, [*hub_args, "devices", "add", "cam-1", "--target", "x86-onnx-cpu"])
            assert again.exit_code == 1 and again.output == "error: HTTP 409: device cam-1 is already provisioned\n"
            full = runner.invoke(app, [*hub_args, "devices", "add", "cam-2", "--target", "x", "--out", str(kit)])
            assert full.exit_code == 1 and "not empty" in full.output  # nothing overwritten

            labelled = cli("devices", "label", "cam-1", "tier=edge", "site-")
            assert labelled["labels"] == {"tier": "edge"}
            assert [d["id"] for d in cli("devices", "list")] == ["cam-1"]
            assert cli("devices", "show", "cam-1")["labels"] == {"tier": "edge"}
            assert cli("devices", "remove", "cam-1") == {"device_id": "cam-1", "removed": True}
            gone = runner.invoke(app, [*hub_args, "devices", "show", "cam-1"])
            assert gone.exit_code == 1 and gone.output.startswith("error: HTTP 404: ")
    finally:
        hub.stop()


def test_rekey_writes_a_new_kit_or_prints_the_new_secret(tmp_path: Path) -> None:
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))
    hub.start()
    runner = CliRunner()
    kit = tmp_path / "kits" / "cam-1"
    try:
        _, old = hub.registry.provision_device("cam-1", "x86-onnx-cpu")
        with serving(hub, Role.PROVISIONER) as hub_args:
            written = runner.invoke(app, [*hub_args, "devices", "rekey", "cam-1", "--out", str(kit), "--json"])
            assert written.exit_code == 0, written.output
            assert json.loads(written.stdout) == {
                "device_id": "cam-1",
                "directory": str(kit),
                "files": ["agent.toml", "device.secret", "root.json"],
            }
            config = AgentConfig.load(kit / "agent.toml")
            secret = config.secret()
            assert secret is not None and config.device_id == "cam-1"
            assert stat.S_IMODE((kit / "device.secret").stat().st_mode) == 0o600
            assert hub.registry.check_device_secret("cam-1", secret)
            assert not hub.registry.check_device_secret("cam-1", old)
            full = runner.invoke(app, [*hub_args, "devices", "rekey", "cam-1", "--out", str(kit)])
            assert full.exit_code == 1 and "not empty" in full.output
            assert hub.registry.check_device_secret("cam-1", secret)  # refused before asking the hub

            printed = runner.invoke(app, [*hub_args, "devices", "rekey", "cam-1"])
            assert printed.exit_code == 0, printed.output
            answer = json.loads(printed.stdout)
            assert answer["device_id"] == "cam-1" and hub.registry.check_device_secret("cam-1", answer["secret"])
            ghost = runner.invoke(app, [*hub_args, "devices", "rekey", "ghost", "--out", str(tmp_path / "ghost")])
            assert ghost.exit_code == 1 and ghost.output == "error: HTTP 404: device ghost is not provisioned\n"
            assert not (tmp_path / "ghost").exists()
            viewer = [*hub_args[:2], "--token", token_for(hub, Role.VIEWER)]
            denied = runner.invoke(app, [*viewer, "devices", "rekey", "cam-1"])
            assert denied.exit_code == 1 and denied.output.startswith("error: HTTP 403: ")
            assert len(denied.output.splitlines()) == 1
        assert hub.registry.check_device_secret("cam-1", answer["secret"])
    finally:
        hub.stop()
