"""``edgefleet devices add|rekey|list|show|label|remove``: the device inventory, through the hub's REST API.

``devices add ID --target T --out DIR`` provisions the device and writes its kit into DIR (owner-only): a ready
``agent.toml``, the secret, the trust root, the broker's CA and, when the hub has a fleet CA, the certificate.
``devices rekey ID --out DIR`` gives a provisioned device a new secret and writes its new kit the same way.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.output import JSON_OPTION, emit, fail
from hub.cli.remote import hub_session


def _labels(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not key=value")
        pairs[key] = value
    return pairs


def register(app: typer.Typer) -> None:
    """Add the ``devices`` commands to ``app``."""
    devices_app = typer.Typer(help="Device inventory: provision, label, decommission.", no_args_is_help=True)
    app.add_typer(devices_app, name="devices")

    @devices_app.command("add")
    def add(
        device_id: str,
        target: str = typer.Option(..., help="target profile name"),
        label: list[str] = typer.Option([], help="key=value, repeatable"),
        out: Path | None = typer.Option(None, help="write the device's kit (agent.toml, secret, trust root) here"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Provision a device: with --out write everything it needs, else print its secret (shown once)."""
        body = {"device_id": device_id, "target": target, "labels": _labels(label)}
        _refuse_used(out)
        with hub_session() as hub:
            if out is None:
                answer = hub.post("/devices", body)
                emit(answer, True, print)
                return
            archive = hub.post_bytes("/devices/kit", body)
        _write_kit(archive, out, {"device_id": device_id, "target": target}, as_json)

    @devices_app.command("rekey")
    def rekey(
        device_id: str,
        out: Path | None = typer.Option(None, help="write the device's new kit (agent.toml, secret, trust root) here"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Give a device a new secret; the old one stops working at once. With --out write its new kit, else
        print the new secret (shown once)."""
        _refuse_used(out)
        with hub_session() as hub:
            if out is None:
                emit(hub.post(f"/devices/{device_id}/secret?format=json"), True, print)
                return
            archive = hub.post_bytes(f"/devices/{device_id}/secret", None)
        _write_kit(archive, out, {"device_id": device_id}, as_json)

    @devices_app.command("list")
    def list_devices(as_json: bool = JSON_OPTION) -> None:
        """List devices with target, labels, online status and installed version."""
        with hub_session() as hub:
            emit(hub.get("/devices"), as_json, _print_devices)

    @devices_app.command("show")
    def show(device_id: str, as_json: bool = JSON_OPTION) -> None:
        """One device."""
        with hub_session() as hub:
            emit(hub.get(f"/devices/{device_id}"), as_json, lambda d: _print_devices([d]))

    @devices_app.command("label")
    def label_device(
        device_id: str,
        labels: list[str] = typer.Argument(None, help="key=value to set, key- to remove"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Set labels (key=value) and remove them (key-), like kubectl label."""
        items = labels or []
        remove = [item[:-1] for item in items if item.endswith("-") and "=" not in item]
        body = {"set": _labels([i for i in items if not (i.endswith("-") and "=" not in i)]), "remove": remove}
        with hub_session() as hub:
            emit(hub.patch(f"/devices/{device_id}/labels", body), as_json, lambda d: _print_devices([d]))

    @devices_app.command("remove")
    def remove(device_id: str, as_json: bool = JSON_OPTION) -> None:
        """Decommission a device: its credential stops working at once."""
        with hub_session() as hub:
            hub.delete(f"/devices/{device_id}")
        emit({"device_id": device_id, "removed": True}, as_json, lambda _: typer.echo(f"{device_id} removed"))


def _refuse_used(out: Path | None) -> None:
    """End the command before calling the hub when ``out`` holds anything (a kit is never written over)."""
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"{out} is not empty; give a new directory")


def _write_kit(archive: bytes, out: Path, summary: dict[str, Any], as_json: bool) -> None:
    """Unpack the hub's kit into ``out`` and say what was written (``summary`` plus the directory and files)."""
    from hub.devices.provisioning import AGENT_CONFIG, extract_device_kit

    try:
        config = extract_device_kit(archive, out)
    except (tarfile.TarError, OSError) as exc:
        fail(f"the hub's kit could not be written to {out}: {exc}")
    files = sorted(p.name for p in out.iterdir())
    device_id = summary["device_id"]
    emit(
        {**summary, "directory": str(out), "files": files},
        as_json,
        lambda _: typer.echo(
            f"{device_id}: kit in {out} ({', '.join(files)}); run: edgefleet-agent run "
            f"--config {config.parent / AGENT_CONFIG}"
        ),
    )


def _print_devices(devices: list[dict[str, Any]]) -> None:
    table = Table("device", "target", "labels", "online", "model:version", "update")
    for d in devices:
        installed = f"{d['active_model']}:{d['active_version']}" if d.get("active_model") else "-"
        labels = ",".join(f"{k}={v}" for k, v in d.get("labels", {}).items())
        table.add_row(d["id"], d["target"], labels, "yes" if d.get("online") else "no", installed, d["update_state"])
    Console().print(table)
