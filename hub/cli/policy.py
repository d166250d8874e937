"""``edgefleet policy set|show|events``: drift policies per model version, on the hub's database.

The running hub evaluates stored policies every ``policy_interval_s``, so the CLI never needs the hub.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from hub.config import HubSettings
from hub.errors import HubError

DATA_DIR = typer.Option(Path("var/hub"), help="the hub's data directory")
DATABASE_URL = typer.Option(None, help="SQLAlchemy URL; omitted: SQLite in the data dir")


def _stores(data_dir: Path, database_url: str | None) -> Any:
    from hub.registry import Database, Registry
    from hub.registry.policies import PolicyStore

    registry = Registry(Database(HubSettings(data_dir=data_dir, database_url=database_url).resolved_database_url()))
    return registry, PolicyStore(registry.db)


def register(app: typer.Typer) -> None:
    """Add the ``policy`` group to ``app``."""
    policy_app = typer.Typer(
        help="Drift policies: pause, alert and roll back on sustained drift.", no_args_is_help=True
    )
    policy_app.command("set")(set_command)
    policy_app.command("show")(show_command)
    policy_app.command("events")(events_command)
    app.add_typer(policy_app, name="policy")


def set_command(
    model_version: str = typer.Argument(..., metavar="MODEL:VERSION"),
    max_drift_share: float | None = typer.Option(None, help="share of drifted features that breaches (0-1)"),
    feature: str | None = typer.Option(None, help="one feature watched on its own"),
    max_feature_statistic: float | None = typer.Option(None, help="that feature's drift statistic that breaches"),
    max_violation_rate: float | None = typer.Option(None, help="contract rule violation rate that breaches (0-1)"),
    window_s: float = typer.Option(600.0, help="seconds a breach must last before the hub acts"),
    lookback_s: float = typer.Option(3600.0, help="seconds of telemetry evaluated"),
    by: list[str] = typer.Option(["target"], help="cohort dimension: target, version or label:KEY; repeatable"),
    no_pause: bool = typer.Option(False, "--no-pause", help="do not pause the model's rollouts"),
    rollback: bool = typer.Option(False, "--rollback", help="roll a breaching cohort back to the last good version"),
    rollback_to: str | None = typer.Option(None, help="version to roll back to (default: last good)"),
    data_dir: Path = DATA_DIR,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Set the policy of MODEL:VERSION (replacing any)."""
    from hub.monitoring.queries import parse_model_version
    from hub.policies.config import Policy

    try:
        model, version = parse_model_version(model_version)
        policy = Policy(
            max_drift_share=max_drift_share,
            feature=feature,
            max_feature_statistic=max_feature_statistic,
            max_violation_rate=max_violation_rate,
            window_s=window_s,
            lookback_s=lookback_s,
            by=by,
            pause_rollouts=not no_pause,
            rollback=rollback,
            rollback_to=rollback_to,
        )
        registry, store = _stores(data_dir, database_url)
        registry.get_version(model, version)
        store.put(model, version, policy.model_dump(mode="json"), now=time.time())
    except ValidationError as exc:
        first = exc.errors()[0]
        typer.echo(
            f"error: invalid policy: {'.'.join(str(p) for p in first['loc']) or 'policy'}: {first['msg']}", err=True
        )
        raise typer.Exit(2) from exc
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps({"model": model, "version": version, "policy": policy.model_dump(mode="json")}, indent=2))


def show_command(
    model_version: str = typer.Argument(..., metavar="MODEL:VERSION"),
    data_dir: Path = DATA_DIR,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Print the policy of MODEL:VERSION."""
    from hub.monitoring.queries import parse_model_version

    try:
        model, version = parse_model_version(model_version)
        row = _stores(data_dir, database_url)[1].get(model, version)
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps({"model": model, "version": version, "policy": row.policy}, indent=2))


def events_command(
    model: str | None = typer.Option(None, help="only this model's events"),
    limit: int = typer.Option(50, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help="print JSON with the evidence"),
    data_dir: Path = DATA_DIR,
    database_url: str | None = DATABASE_URL,
) -> None:
    """What policies did, newest first."""
    events = _stores(data_dir, database_url)[1].events(model, limit=limit)
    if as_json:
        typer.echo(json.dumps([e.model_dump() for e in events], indent=2))
        return
    for e in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.created_at))
        typer.echo(f"{when}  {e.model}:{e.version}  {e.cohort}  {e.action}  {e.detail}")
