"""Mosquitto password and ACL files generated from the device inventory."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fleet.wire.acl import HUB_USERNAME
from hub.cli import app
from hub.config import HubSettings
from hub.registry import Database, Registry
from hub.registry.credentials import verify_password


def test_auth_files_cover_every_provisioned_device_and_the_hub(tmp_path: Path) -> None:
    settings = HubSettings(data_dir=tmp_path / "hub")
    settings.data_dir.mkdir(parents=True)
    db = Database(settings.resolved_database_url())
    registry = Registry(db)
    secrets = {name: registry.provision_device(name, "rpi4-arm64")[1] for name in ("cam-a", "cam-b")}
    db.close()
    result = CliRunner().invoke(
        app, ["broker", "auth-files", "--out", str(tmp_path / "auth"), "--data-dir", str(settings.data_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "allow_anonymous false" in result.output
    hashes = dict(line.split(":", 1) for line in (tmp_path / "auth" / "passwd").read_text().split())
    assert set(hashes) == {"cam-a", "cam-b", HUB_USERNAME}
    assert all(verify_password(secret, hashes[name]) for name, secret in secrets.items())
    assert not verify_password(secrets["cam-a"], hashes["cam-b"])
    acl = (tmp_path / "auth" / "acl").read_text()
    assert "user cam-a" in acl and "topic write edgefleet/v1/devices/cam-a/telemetry" in acl


def test_auth_files_render_a_mutual_tls_listener(tmp_path: Path) -> None:
    settings = HubSettings(data_dir=tmp_path / "hub")
    settings.data_dir.mkdir(parents=True)
    args = ["broker", "auth-files", "--out", str(tmp_path / "auth"), "--data-dir", str(settings.data_dir)]
    tls = ["--port", "8883", "--tls-cert", "b.crt", "--tls-key", "b.key", "--client-ca", "ca.crt"]
    result = CliRunner().invoke(app, [*args, *tls, "--require-client-cert"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for line in (
        "listener 8883 127.0.0.1",
        "certfile b.crt",
        "keyfile b.key",
        "cafile ca.crt",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
    ):
        assert line in lines, (line, lines)
    refused = CliRunner().invoke(app, [*args, "--tls-cert", "b.crt", "--require-client-cert"])
    assert refused.exit_code != 0
