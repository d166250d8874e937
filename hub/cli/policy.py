"""``edgefleet policy set|show|events``: drift policies per model version, through the hub's REST API.

The running hub evaluates stored policies every ``policy_interval_s``; setting one needs an operator token,
reading a viewer's.
"""

from __future__ import annotations

import time
from typing import Any

import typer

from hub.cli.model_ref import parse_model_version
from hub.cli.output import JSON_OPTION, emit, fail
from hub.cli.remote import hub_session
from hub.errors import HubError


def register(app: typer.Typer) -> None:
    """Add the ``policy`` group to ``app``."""
    policy_app = typer.Typer(
        help="Drift policies: pause, alert and roll back on sustained drift.", no_args_is_help=True
    )
    policy_app.command("set")(set_command)
    policy_app.command("show")(show_command)
    policy_app.command("events")(events_command)
    app.add_typer(policy_app, name="policy")


def _model_version(text: str) -> tuple[str, str]:
    try:
        return parse_model_version(text)
    except HubError as exc:
        fail(exc)


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
    as_json: bool = JSON_OPTION,
) -> None:
    """Set the policy of MODEL:VERSION, replacing any (PUT /models/M/versions/V/policy)."""
    model, version = _model_version(model_version)
    policy = {
        "max_drift_share": max_drift_share,
        "feature": feature,
        "max_feature_statistic": max_feature_statistic,
        "max_violation_rate": max_violation_rate,
        "window_s": window_s,
        "lookback_s": lookback_s,
        "by": by,
        "pause_rollouts": not no_pause,
        "rollback": rollback,
        "rollback_to": rollback_to,
    }
    with hub_session() as hub:
        answer = hub.put(f"/models/{model}/versions/{version}/policy", policy)
    emit(answer, as_json, _print_policy)


def show_command(
    model_version: str = typer.Argument(..., metavar="MODEL:VERSION"), as_json: bool = JSON_OPTION
) -> None:
    """Print the policy of MODEL:VERSION (GET /models/M/versions/V/policy)."""
    model, version = _model_version(model_version)
    with hub_session() as hub:
        emit(hub.get(f"/models/{model}/versions/{version}/policy"), as_json, _print_policy)


def events_command(
    model: str | None = typer.Option(None, help="only this model's events"),
    limit: int = typer.Option(50, min=1, max=1000),
    as_json: bool = JSON_OPTION,
) -> None:
    """What policies did, newest first, with the evidence in --json (GET /policy-events)."""
    with hub_session() as hub:
        emit(hub.get("/policy-events", model=model, limit=limit), as_json, _print_events)


def _print_policy(answer: dict[str, Any]) -> None:
    typer.echo(f"policy of {answer['model']}:{answer['version']}")
    for key, value in answer["policy"].items():
        if value is not None:
            typer.echo(f"  {key}: {value}")


def _print_events(events: list[dict[str, Any]]) -> None:
    for e in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["created_at"]))
        typer.echo(f"{when}  {e['model']}:{e['version']}  {e['cohort']}  {e['action']}  {e['detail']}")
