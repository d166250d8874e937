"""``edgefleet tokens create|list|revoke`` and ``edgefleet audit`` on the hub's database: the token works against
the REST app, is shown once, is refused once revoked, and the CLI's changes are audited."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hub.api import create_app
from hub.app import Hub
from hub.cli import app
from hub.config import HubSettings
from tests.hub.auth.clients import bearer_client


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_create_list_revoke_and_audit(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "hub")]
    token = _run("tokens", "create", "--name", "grafana", "--role", "viewer", "--days", "30", *data).strip()
    assert token.startswith("ef_")
    listed = json.loads(_run("tokens", "list", "--json", *data))
    assert [(t["name"], t["role"], t["state"]) for t in listed] == [("grafana", "viewer", "active")]
    assert token not in json.dumps(listed) and "token_sha256" not in listed[0]
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))
    try:
        client = bearer_client(create_app(hub), token)
        assert client.get("/metrics").status_code == 200
        _run("tokens", "revoke", listed[0]["id"], *data)
        assert client.get("/metrics").status_code == 401
    finally:
        hub.stop()
    assert json.loads(_run("tokens", "list", "--json", *data))[0]["state"] == "revoked"
    audit = json.loads(_run("audit", "--json", *data))
    assert [(e["method"], e["route"], e["token_id"], e["client"]) for e in audit] == [
        ("CLI", "tokens revoke", "cli", "local"),
        ("CLI", "tokens create", "cli", "local"),
    ]
    table = _run("audit", *data)
    assert table.count("CLI") == 2 and "local" in table


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "hub")]
    unknown = CliRunner().invoke(app, ["tokens", "revoke", "nope", *data])
    assert unknown.exit_code == 1 and "token nope does not exist" in unknown.output
    bad_role = CliRunner().invoke(app, ["tokens", "create", "--name", "x", "--role", "root", *data])
    assert bad_role.exit_code == 2 and "root" in bad_role.output
    assert json.loads(_run("tokens", "list", "--json", *data)) == []
