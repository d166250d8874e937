"""``edgefleet demo``: the whole loop in one process on a throwaway hub (its own temporary data directory and
embedded broker) with simulated devices; it touches no other hub."""

from __future__ import annotations

import signal
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.output import JSON_OPTION, emit


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command("demo")(demo)


def demo(
    devices: int = typer.Option(5, min=1, max=200, help="simulated devices"),
    requests: int = typer.Option(50, min=1, help="inference requests per device"),
    broker_url: str | None = typer.Option(None, help="use this broker instead of the embedded one"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a model, ship it to a simulated fleet, drive traffic, and summarise."""
    from hub.demo.run import run_demo

    signal.signal(signal.SIGTERM, _interrupt)  # run the demo's clean-up (agents, broker) on SIGTERM too
    log = None if as_json else Console(stderr=True).print
    summary = run_demo(devices, requests_per_device=requests, broker_url=broker_url, log=log)
    emit(summary, as_json, _print_summary)
    raise typer.Exit(0 if summary["ok"] else 1)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _print_summary(summary: dict[str, Any]) -> None:
    out = Console()
    table = Table(title=f"EdgeFleet demo: digits:1.0.0 on {summary['devices_total']} devices")
    table.add_column("device")
    table.add_column("deployment")
    table.add_column("inferences ok", justify="right")
    table.add_column("accuracy", justify="right")
    deployment = summary["deployment"]
    for device_id, stats in summary["devices"].items():
        accuracy = stats["correct"] / stats["ok"] if stats["ok"] else 0.0
        table.add_row(device_id, deployment["devices"].get(device_id, "?"), str(stats["ok"]), f"{accuracy:.3f}")
    out.print(table)
    out.print(
        f"devices on version: {summary['devices_on_version']}/{summary['devices_total']}  "
        f"inferences ok: {summary['inferences_ok']}  telemetry batches: {summary['telemetry_batches_received']}"
    )
    out.print(
        f"bundle sha256 {summary['bundle_sha256']} ({summary['bundle_bytes']} bytes); "
        f"hub egress {summary['hub_egress_bytes']} bytes; {summary['duration_s']} s"
    )
    out.print("[green]OK[/green]" if summary["ok"] else "[red]FAILED[/red]")
