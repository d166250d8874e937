"""``edgefleet rollout start|status|events|list|pause|resume|abort|promote``, through the hub's REST API.

``--gate-*`` options set the gate's timing and the canary analysis (devices and requests needed, critical
metrics). ``status`` shows the cause of a pause or abort (the gate's verdict and reasons) beside the final state;
``events`` the rollout's timeline.
"""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.output import JSON_OPTION, emit
from hub.cli.remote import hub_session


def register(app: typer.Typer) -> None:
    """Add ``rollout`` commands to ``app``."""
    rollout_app = typer.Typer(
        help="Staged rollouts with canary, waves, gates and automatic rollback.", no_args_is_help=True
    )
    app.add_typer(rollout_app, name="rollout")

    @rollout_app.command("start")
    def start(
        model_version: str = typer.Argument(..., metavar="MODEL:VERSION"),
        selector: str = typer.Option("", help="label selector, e.g. 'env=prod,tier in (edge)'"),
        canary: str = typer.Option("5%", help="canary size: 5% or a device count"),
        waves: str = typer.Option("10,50,100", help="cumulative percentages, or exp:INITIALxFACTOR"),
        max_failure_rate: float | None = typer.Option(0.05, help="abort above this failure rate"),
        max_failures: int | None = typer.Option(None, help="abort above this many failures"),
        min_devices: int = typer.Option(10, help="finished devices before the failure rate counts"),
        success_threshold: float = typer.Option(0.95, help="share of a wave that must install"),
        approval: str = typer.Option("none", help="none | after_canary | every_wave"),
        no_gate: bool = typer.Option(False, "--no-gate", help="no canary analysis between waves"),
        gate_after: str = typer.Option("every_wave", help="gate after: canary | every_wave"),
        gate_soak: float = typer.Option(0.0, help="seconds after a wave before the gate is asked"),
        gate_retry: float = typer.Option(300.0, help="seconds between asks while inconclusive"),
        gate_max_wait: float = typer.Option(3600.0, help="seconds without a verdict before pausing"),
        gate_min_devices: int | None = typer.Option(
            None, help="canary analysis: devices per group (latency, confidence); default 5"
        ),
        gate_min_requests: int | None = typer.Option(
            None, help="canary analysis: requests per group (error rate); default 500"
        ),
        gate_min_requests_per_device: int | None = typer.Option(
            None, help="canary analysis: requests a device needs to count; default 20"
        ),
        gate_critical: str | None = typer.Option(
            None,
            help="metrics whose failure fails the gate, e.g. latency,error_rate,confidence "
            "(default latency,error_rate; the others count in the score)",
        ),
        device_timeout: float = typer.Option(1800.0, help="seconds a device has to finish"),
        rollout_id: str | None = typer.Option(None, "--id", help="rollout id (default: generated)"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Create a rollout; the hub starts it at once."""
        body = {
            "model_version": model_version,
            "selector": selector,
            "canary": canary,
            "waves": waves,
            "max_failure_rate": max_failure_rate,
            "max_failures": max_failures,
            "min_devices": min_devices,
            "success_threshold": success_threshold,
            "approval": approval,
            "gate": not no_gate,
            "gate_after": gate_after,
            "gate_soak_s": gate_soak,
            "gate_retry_s": gate_retry,
            "gate_max_wait_s": gate_max_wait,
            "gate_min_devices": gate_min_devices,
            "gate_min_requests": gate_min_requests,
            "gate_min_requests_per_device": gate_min_requests_per_device,
            "gate_critical": gate_critical,
            "device_timeout_s": device_timeout,
            "rollout_id": rollout_id,
        }
        with hub_session() as hub:
            status = hub.post("/rollouts", body)
        emit(status, as_json, lambda data: typer.echo(data["rollout_id"]))

    @rollout_app.command("status")
    def status(rollout_id: str, as_json: bool = JSON_OPTION) -> None:
        """Progress overall, per wave and per device class; the cause of a pause or abort; the gate's verdicts."""
        with hub_session() as hub:
            emit(hub.get(f"/rollouts/{rollout_id}"), as_json, _print_status)

    @rollout_app.command("events")
    def events(rollout_id: str, as_json: bool = JSON_OPTION) -> None:
        """The rollout's timeline: state changes with their reasons, waves sent, gate requests, rollbacks."""
        with hub_session() as hub:
            emit(hub.get(f"/rollouts/{rollout_id}/events"), as_json, _print_events)

    @rollout_app.command("list")
    def list_rollouts(as_json: bool = JSON_OPTION) -> None:
        """All rollouts, newest first."""
        with hub_session() as hub:
            emit(hub.get("/rollouts"), as_json, _print_list)

    def _command(name: str) -> None:
        def run(rollout_id: str, as_json: bool = JSON_OPTION) -> None:
            with hub_session() as hub:
                status = hub.post(f"/rollouts/{rollout_id}/{name}")
            emit(status, as_json, lambda data: typer.echo(f"{name}: {rollout_id} is {data['state']}"))

        run.__doc__ = f"{name.capitalize()} a rollout."
        rollout_app.command(name)(run)

    for name in ("pause", "resume", "abort", "promote"):
        _command(name)


def _print_list(rows: list[dict[str, Any]]) -> None:
    table = Table("rollout", "model:version", "state")
    for r in rows:
        table.add_row(r["rollout_id"], f"{r['model']}:{r['version']}", r["state"])
    Console().print(table)


def _describe(event: dict[str, Any]) -> str:
    kind = event["kind"]
    if kind == "state_changed":
        return f"{event['source']} -> {event['target']} ({event['event']}): {event['reason']}"
    if kind == "deploy":
        return f"wave {event['wave']}: {len(event['device_ids'])} device(s) sent {event['model']}:{event['version']}"
    if kind == "request_gate":
        return f"gate asked after wave {event['wave']} (attempt {event['attempt']})"
    if kind == "rollback":
        return f"{len(event['device_ids'])} device(s) rolled back: {event['reason']}"
    if kind == "skipped":
        return f"{len(event['device_ids'])} device(s) skipped: {event['reason']}"
    return str(event.get("reason") or event.get("message") or "")


def _print_events(events: list[dict[str, Any]]) -> None:
    table = Table("time (UTC)", "kind", "what")
    for event in events:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event["at"]))
        table.add_row(at, event["kind"], _describe(event))
    Console().print(table)


def _print_status(data: dict[str, Any]) -> None:
    out = Console()
    out.print(
        f"{data['rollout_id']}  {data['model']}:{data['version']}  [bold]{data['state']}[/bold]  "
        f"{data['wave_name']} of {data['wave_count']}  {data['on_version_percent']}% on version"
    )
    if data["reason"]:
        out.print(f"reason: {data['reason']}")
    if data.get("cause") and data["cause"] != data["reason"]:
        out.print(f"cause: {data['cause']}")
    phases = list(data["totals"])
    rows = [(w["name"], w["devices"]) for w in data["waves"]] + [("[b]total[/b]", data["totals"])]
    for title, items in (("per wave", rows), ("per device class", list(data["classes"].items()))):
        table = Table("", *phases, title=title)
        for name, counts in items:
            table.add_row(name, *(str(counts[p]) for p in phases))
        out.print(table)
    if data["gate"]:
        gate = data["gate"]
        out.print(f"gate: wave {gate['wave']}, attempts {gate['attempts']}; {'; '.join(gate['reasons'])}")
    for verdict in data.get("gate_verdicts", []):
        reasons = "; ".join(verdict["reasons"]) or "no reasons given"
        where = f"after wave {verdict['wave']} (attempt {verdict['attempt']})"
        out.print(f"gate verdict {where}: {verdict['verdict']}: {reasons}")
    out.print(f"allowed: {', '.join(data['allowed_commands']) or 'none'}")
