"""``edgefleet tokens create|list|revoke`` and ``edgefleet audit``, through the hub's REST API (admin token).

The first admin token comes from the hub itself: ``hub serve`` prints one at its first start, or stores
``$EDGEFLEET_ADMIN_TOKEN`` (a new value given at a restart is stored too, which recovers a lost admin token).
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.output import JSON_OPTION, emit
from hub.cli.remote import hub_session

console = Console(stderr=True)


def _when(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def register(app: typer.Typer) -> None:
    """Add ``tokens`` and ``audit`` to ``app``."""
    tokens_app = typer.Typer(help="API tokens of the REST API (bearer, with a role).", no_args_is_help=True)
    app.add_typer(tokens_app, name="tokens")

    @tokens_app.command("create")
    def create(
        name: str = typer.Option(..., help="who or what holds the token"),
        role: str = typer.Option(..., help="admin, operator, viewer or provisioner"),
        days: float | None = typer.Option(None, min=0.001, help="days until it expires [the hub's default, 90]"),
        no_expiry: bool = typer.Option(False, "--no-expiry", help="never expires (revoke it by hand)"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Create a token (POST /tokens) and print it: it is shown this once, only its digest is stored."""
        body: dict[str, Any] = {"name": name, "role": role}
        if no_expiry or days is not None:
            body["ttl_days"] = None if no_expiry else days
        with hub_session() as hub:
            issued = hub.post("/tokens", body)

        def show(row: dict[str, Any]) -> None:
            typer.echo(row["token"])
            console.print(
                f"token {row['id']} ({row['role']}) for {row['name']}, expires {_when(row['expires_at'])}; shown once"
            )

        emit(issued, as_json, show)

    @tokens_app.command("list")
    def list_tokens(as_json: bool = JSON_OPTION) -> None:
        """List tokens (never their values) with role, expiry and state (GET /tokens)."""
        with hub_session() as hub:
            emit(hub.get("/tokens"), as_json, _print_tokens)

    @tokens_app.command("revoke")
    def revoke(
        token_id: str = typer.Argument(..., help="the token's id (from `tokens list`)"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Revoke a token (DELETE /tokens/ID): refused from the next request on."""
        with hub_session() as hub:
            row = hub.delete(f"/tokens/{token_id}")
        emit(row, as_json, lambda r: typer.echo(f"token {r['id']} ({r['name']}) revoked at {_when(r['revoked_at'])}"))

    @app.command("audit")
    def audit(
        limit: int = typer.Option(50, min=1, max=1000, help="entries at most"),
        token: str | None = typer.Option(None, help="only this token's entries"),
        since_hours: float | None = typer.Option(None, min=0, help="only the last N hours"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """The audit log of changes (who, what, when, from where, outcome), newest first (GET /audit)."""
        since = time.time() - since_hours * 3600 if since_hours is not None else None
        with hub_session() as hub:
            emit(hub.get("/audit", limit=limit, since=since, token_id=token), as_json, _print_audit)


def _print_tokens(rows: list[dict[str, Any]]) -> None:
    table = Table("id", "name", "role", "state", "created", "expires", "created by")
    for r in rows:
        table.add_row(
            r["id"], r["name"], r["role"], r["state"], _when(r["created_at"]), _when(r["expires_at"]), r["created_by"]
        )
    Console().print(table)


def _print_audit(entries: list[dict[str, Any]]) -> None:
    table = Table("when", "token", "name", "method", "route", "path", "from", "status")
    for e in entries:
        table.add_row(
            _when(e["at"]),
            e["token_id"],
            e["token_name"],
            e["method"],
            e["route"],
            e["path"],
            e["client"],
            str(e["status"]),
        )
    Console().print(table)
