"""``edgefleet rollout start|status|list|pause|resume|abort|promote``, working on the hub's database.

``start`` stores the rollout and commands are queued in the database; the running hub (``hub serve``)
picks both up on its next tick, so the CLI never needs the broker. ``--gate-*`` options set the gate's
timing and the canary analysis (devices and requests needed, critical metrics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.config import HubSettings

if TYPE_CHECKING:
    from hub.registry import Registry
    from hub.registry.rollouts import RolloutStore

console = Console(stderr=True)
DATA_DIR = typer.Option(Path("var/hub"), help="the hub's data directory")
DATABASE_URL = typer.Option(None, help="SQLAlchemy URL; omitted: SQLite in the data dir")


def _store(data_dir: Path, database_url: str | None) -> tuple[Registry, RolloutStore]:
    from hub.registry import Database, Registry
    from hub.registry.rollouts import RolloutStore

    registry = Registry(Database(HubSettings(data_dir=data_dir, database_url=database_url).resolved_database_url()))
    return registry, RolloutStore(registry.db)


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
        data_dir: Path = DATA_DIR,
        database_url: str | None = DATABASE_URL,
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Create a rollout; the running hub starts it on its next tick."""
        from fleet.errors import FleetConfigError
        from fleet.rollout_plan import gate_from_cli, plan_from_cli
        from hub.errors import HubError
        from hub.rollouts.operations import create_rollout

        try:
            gate = (
                None
                if no_gate
                else gate_from_cli(
                    after=gate_after,
                    soak_s=gate_soak,
                    retry_interval_s=gate_retry,
                    max_wait_s=gate_max_wait,
                    min_devices=gate_min_devices,
                    min_requests=gate_min_requests,
                    min_requests_per_device=gate_min_requests_per_device,
                    critical=gate_critical,
                )
            )
            plan = plan_from_cli(
                model_version,
                selector=selector,
                canary=canary,
                waves=waves,
                max_failure_rate=max_failure_rate,
                max_failures=max_failures,
                min_devices=min_devices,
                success_threshold=success_threshold,
                approval=approval,
                gate=not no_gate,
                device_timeout_s=device_timeout,
                gate_spec=gate,
            )
            registry, store = _store(data_dir, database_url)
            snapshot = create_rollout(store, registry, plan, rollout_id=rollout_id)
        except (FleetConfigError, HubError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        if as_json:
            typer.echo(json.dumps({"rollout_id": snapshot.rollout_id, "state": snapshot.state.value}))
        else:
            typer.echo(snapshot.rollout_id)

    @rollout_app.command("status")
    def status(
        rollout_id: str,
        data_dir: Path = DATA_DIR,
        database_url: str | None = DATABASE_URL,
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Progress overall, per wave and per device class."""
        from hub.errors import HubError
        from hub.rollouts.operations import rollout_status

        try:
            summary = rollout_status(_store(data_dir, database_url)[1], rollout_id)
        except HubError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        data = summary.model_dump(mode="json")
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        _print_status(data)

    @rollout_app.command("list")
    def list_rollouts(
        data_dir: Path = DATA_DIR,
        database_url: str | None = DATABASE_URL,
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """All rollouts, newest first."""
        rows = [
            {"rollout_id": r.id, "model": r.model, "version": r.version, "state": r.state}
            for r in _store(data_dir, database_url)[1].all()
        ]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table("rollout", "model:version", "state")
        for r in rows:
            table.add_row(r["rollout_id"], f"{r['model']}:{r['version']}", r["state"])
        Console().print(table)

    def _command(name: str) -> None:
        def run(rollout_id: str, data_dir: Path = DATA_DIR, database_url: str | None = DATABASE_URL) -> None:
            from hub.errors import HubError
            from hub.rollouts.operations import request_command

            try:
                request_command(_store(data_dir, database_url)[1], rollout_id, name)
            except HubError as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from exc
            typer.echo(f"{name} queued for {rollout_id}")

        run.__doc__ = f"{name.capitalize()} a rollout (applied by the running hub on its next tick)."
        rollout_app.command(name)(run)

    for name in ("pause", "resume", "abort", "promote"):
        _command(name)


def _print_status(data: dict[str, Any]) -> None:
    out = Console()
    out.print(
        f"{data['rollout_id']}  {data['model']}:{data['version']}  [bold]{data['state']}[/bold]  "
        f"{data['wave_name']} of {data['wave_count']}  {data['on_version_percent']}% on version"
    )
    if data["reason"]:
        out.print(f"reason: {data['reason']}")
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
    out.print(f"allowed: {', '.join(data['allowed_commands']) or 'none'}")
