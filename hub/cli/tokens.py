"""``edgefleet tokens create|list|revoke`` and ``edgefleet audit``, working on the hub's database directly (so the
first tokens can be made before any exists). Token changes made here are written to the audit log as ``cli``."""

from __future__ import annotations

import datetime
import getpass
import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from hub.auth import DEFAULT_TTL_DAYS, Role
from hub.config import HubSettings

if TYPE_CHECKING:
    from hub.registry import AccessStore

console = Console(stderr=True)
DATA_DIR = typer.Option(Path("var/hub"), help="the hub's data directory")
DATABASE_URL = typer.Option(None, help="SQLAlchemy URL; omitted: SQLite in the data dir")
AS_JSON = typer.Option(False, "--json", help="print JSON")


def _store(data_dir: Path, database_url: str | None) -> AccessStore:
    from hub.errors import HubError
    from hub.registry import AccessStore, Database

    if database_url is None:  # tokens may be made before the hub's first start
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return AccessStore(Database(HubSettings(data_dir=data_dir, database_url=database_url).resolved_database_url()))
    except HubError as exc:
        raise _fail(str(exc)) from exc


def _when(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def _audit_cli(store: AccessStore, action: str, token_id: str, status: int) -> None:
    from hub.registry import AuditEntry

    user = getpass.getuser()
    store.record_audit(
        AuditEntry(
            token_id="cli",
            token_name=f"cli:{user}",
            role="admin",
            method="CLI",
            route=f"tokens {action}",
            path=f"/tokens/{token_id}",
            client="local",
            status=status,
        )
    )


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``tokens`` and ``audit`` to ``app``."""
    tokens_app = typer.Typer(help="API tokens of the REST API (bearer, with a role).", no_args_is_help=True)
    app.add_typer(tokens_app, name="tokens")

    @tokens_app.command("create")
    def create(
        name: str = typer.Option(..., help="who or what holds the token"),
        role: Role = typer.Option(..., help="admin, operator, viewer or provisioner"),
        days: float = typer.Option(DEFAULT_TTL_DAYS, min=0.001, help="days until it expires"),
        no_expiry: bool = typer.Option(False, "--no-expiry", help="never expires (revoke it by hand)"),
        data_dir: Path = DATA_DIR,
        database_url: str | None = DATABASE_URL,
        as_json: bool = AS_JSON,
    ) -> None:
        """Create a token and print it: it is shown this once, only its digest is stored."""
        from hub.auth import issue_token
        from hub.errors import HubError

        store = _store(data_dir, database_url)
        try:
            issued = issue_token(
                store, name, role, ttl_days=None if no_expiry else days, created_by=f"cli:{getpass.getuser()}"
            )
        except HubError as exc:
            raise _fail(str(exc)) from exc
        _audit_cli(store, "create", issued.row.id, 201)
        row = issued.row
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "id": row.id,
                        "name": row.name,
                        "role": row.role,
                        "expires_at": row.expires_at,
                        "token": issued.token,
                    }
                )
            )
            return
        typer.echo(issued.token)
        console.print(f"token {row.id} ({row.role}) for {row.name}, expires {_when(row.expires_at)}; shown once")

    @tokens_app.command("list")
    def list_tokens(
        data_dir: Path = DATA_DIR, database_url: str | None = DATABASE_URL, as_json: bool = AS_JSON
    ) -> None:
        """List tokens (never their values) with role, expiry and state."""
        from hub.auth.api import token_view

        rows = [token_view(row) for row in _store(data_dir, database_url).tokens()]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table("id", "name", "role", "state", "created", "expires", "created by")
        for r in rows:
            table.add_row(
                r["id"],
                r["name"],
                r["role"],
                r["state"],
                _when(r["created_at"]),
                _when(r["expires_at"]),
                r["created_by"],
            )
        Console().print(table)

    @tokens_app.command("revoke")
    def revoke(
        token_id: str = typer.Argument(..., help="the token's id (from `tokens list`)"),
        data_dir: Path = DATA_DIR,
        database_url: str | None = DATABASE_URL,
    ) -> None:
        """Revoke a token: refused from the next request on."""
        from hub.errors import NotFoundError

        store = _store(data_dir, database_url)
        try:
            row = store.revoke_token(token_id)
        except NotFoundError as exc:
            raise _fail(str(exc)) from exc
        _audit_cli(store, "revoke", row.id, 200)
        console.print(f"token {row.id} ({row.name}) revoked at {_when(row.revoked_at)}")

    @app.command("audit")
    def audit(
        limit: int = typer.Option(50, min=1, max=1000, help="entries at most"),
        token: str | None = typer.Option(None, help="only this token's entries"),
        since_hours: float | None = typer.Option(None, min=0, help="only the last N hours"),
        data_dir: Path = DATA_DIR,
        database_url: str | None = DATABASE_URL,
        as_json: bool = AS_JSON,
    ) -> None:
        """The audit log of changes (who, what, when, from where, outcome), newest first."""
        import time

        since = time.time() - since_hours * 3600 if since_hours is not None else None
        entries = _store(data_dir, database_url).audit_entries(limit=limit, since=since, token_id=token)
        if as_json:
            typer.echo(json.dumps([e.model_dump() for e in entries], indent=2))
            return
        table = Table("when", "token", "name", "method", "route", "path", "from", "status")
        for e in entries:
            table.add_row(_when(e.at), e.token_id, e.token_name, e.method, e.route, e.path, e.client, str(e.status))
        Console().print(table)
