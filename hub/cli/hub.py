"""The bootstrap commands, run on the hub's machine with its database: ``hub serve`` and ``hub migrate``. Every
other command that manages hub state talks to the REST API this one serves."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from hub.cli.output import JSON_OPTION, fail
from hub.errors import HubError

if TYPE_CHECKING:
    from hub.config import HubSettings

console = Console(stderr=True)
log = logging.getLogger("hub")


def register(app: typer.Typer) -> None:
    """Add the hub's commands to ``app``."""
    hub_app = typer.Typer(help="Run the hub.", no_args_is_help=True)
    app.add_typer(hub_app, name="hub")

    @hub_app.command("serve")
    def serve(
        config: Path | None = typer.Option(None, "--config", help="settings file (TOML, HubSettings field names)"),
        data_dir: Path | None = typer.Option(None, help="registry, artifacts and TUF keys [var/hub]"),
        broker_url: str | None = typer.Option(None, help="mqtt://host:port; omitted: embedded broker"),
        database_url: str | None = typer.Option(None, help="SQLAlchemy URL; omitted: SQLite in data dir"),
        artifact_store: str | None = typer.Option(
            None, help="s3://bucket/prefix?endpoint=URL (S3-compatible, prefix optional); omitted: data dir/artifacts"
        ),
        bundle_transport: str | None = typer.Option(
            None, help="how devices download bundles: mqtt (broker chunk broadcast) or http (range requests) [mqtt]"
        ),
        bundle_url: str | None = typer.Option(
            None, help="http: where devices reach this hub's /bundles route [http(s)://api-host:api-port/bundles]"
        ),
        bundle_mirror: list[str] = typer.Option(
            [], help="http: a mirror or CDN base URL holding bundles as BASE/SHA256, tried before the hub; repeatable"
        ),
        broker_host: str | None = typer.Option(None, help="embedded broker's listen address [127.0.0.1]"),
        broker_port: int | None = typer.Option(None, help="embedded broker port [1883]"),
        api_host: str | None = typer.Option(None, help="REST API's listen address [127.0.0.1]"),
        api_port: int | None = typer.Option(None, help="REST API port [8600]"),
        broker_ca_file: Path | None = typer.Option(None, help="CA of the broker's certificate (mqtts://)"),
        broker_cert_file: Path | None = typer.Option(None, help="the hub's client certificate for the broker"),
        broker_key_file: Path | None = typer.Option(None, help="its private key"),
        embedded_tls_cert: Path | None = typer.Option(None, help="embedded broker: serve TLS with this cert"),
        embedded_tls_key: Path | None = typer.Option(None, help="embedded broker: the certificate's key"),
        embedded_client_ca: Path | None = typer.Option(None, help="embedded broker: CA of device certificates"),
        require_client_cert: bool | None = typer.Option(
            None, "--require-client-cert", help="embedded broker: devices must present a cert"
        ),
        api_tls_cert: Path | None = typer.Option(None, help="serve the REST API over HTTPS with this cert"),
        api_tls_key: Path | None = typer.Option(None, help="the REST API certificate's key"),
        trusted_proxy: list[str] = typer.Option(
            [], help="reverse proxy address or CIDR whose X-Forwarded-For is believed; repeatable"
        ),
        device_broker_url: str | None = typer.Option(None, help="broker URL written into device kits"),
        device_ca_dir: Path | None = typer.Option(None, help="fleet CA: device kits get a client certificate"),
        broker_auth_dir: Path | None = typer.Option(None, help="keep Mosquitto's password and ACL files here"),
        log_format: str = typer.Option("text", help="text, or json: one JSON object per line"),
        as_json: bool = typer.Option(
            False, "--json", help="JSON logs; the admin token and the ready line as JSON objects on stdout"
        ),
    ) -> None:
        """Start the hub (REST API, MQTT wiring; an in-process broker when no broker URL is given).

        On first start it prints an admin API token once (or stores $EDGEFLEET_ADMIN_TOKEN).
        Settings come from these flags, then EDGEFLEET_* environment variables (EDGEFLEET_API_PORT=9000), then
        the --config file, then the defaults shown in brackets."""
        from hub.cli.logs import configure_logging
        from hub.config import load_settings

        if log_format not in ("text", "json"):
            fail(f"--log-format must be text or json, not {log_format!r}")
        json_logs = as_json or log_format == "json"
        configure_logging("json" if json_logs else "text")
        try:
            settings = load_settings(
                config,
                defaults={"broker_port": 1883},  # a served hub's embedded broker listens where devices expect it
                data_dir=data_dir,
                broker_url=broker_url,
                database_url=database_url,
                artifact_store=artifact_store,
                bundle_transport=bundle_transport,
                bundle_url=bundle_url,
                bundle_mirrors=bundle_mirror or None,
                broker_host=broker_host,
                broker_port=broker_port,
                api_host=api_host,
                api_port=api_port,
                broker_ca_file=broker_ca_file,
                broker_cert_file=broker_cert_file,
                broker_key_file=broker_key_file,
                embedded_tls_cert=embedded_tls_cert,
                embedded_tls_key=embedded_tls_key,
                embedded_client_ca=embedded_client_ca,
                require_client_cert=require_client_cert,
                api_tls_cert=api_tls_cert,
                api_tls_key=api_tls_key,
                device_broker_url=device_broker_url,
                device_ca_dir=device_ca_dir,
                broker_auth_dir=broker_auth_dir,
                trusted_proxies=trusted_proxy or None,
            )
        except HubError as exc:
            fail(exc)
        _run_hub(settings, json_logs=json_logs, as_json=as_json)

    @hub_app.command("migrate")
    def migrate(
        data_dir: Path = typer.Option(Path("var/hub"), help="registry, artifacts and TUF keys"),
        database_url: str | None = typer.Option(None, help="SQLAlchemy URL; omitted: SQLite in data dir"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Bring the registry's schema to this release's revision (``hub serve`` also does it at start)."""
        from hub.private_files import private_dir
        from hub.registry import Database

        if database_url is None:
            private_dir(data_dir)  # as `hub serve` makes it: a first migrate may come before the first start
        try:
            from hub.config import HubSettings

            db = Database(HubSettings(data_dir=data_dir, database_url=database_url).resolved_database_url())
        except HubError as exc:
            fail(exc)
        db.close()
        result = db.migration
        if as_json:
            backup = str(result.backup) if result.backup is not None else None
            typer.echo(json.dumps({"from": result.from_revision, "to": result.to_revision, "backup": backup}))
            return
        typer.echo(f"schema revision: from {result.from_revision or 'none (empty database)'} to {result.to_revision}")
        if result.backup is not None:
            typer.echo(f"the database as it was: {result.backup}")


def _listen(host: str, port: int) -> socket.socket:
    """The REST API's listening socket, bound before the hub starts so a taken port fails in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HubError(f"the REST API cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _run_hub(settings: HubSettings, *, json_logs: bool, as_json: bool) -> None:
    """Start the hub and serve its REST API until interrupted; a failure to start is one line."""
    import os

    import uvicorn

    from fleet.errors import FleetError
    from hub.api import create_app
    from hub.app import Hub
    from hub.auth import ADMIN_TOKEN_ENV, bootstrap_admin_token
    from hub.devices.api import refresh_broker_auth
    from hub.registry import AccessStore

    try:
        sock = _listen(settings.api_host, settings.api_port)
    except HubError as exc:
        fail(exc)
    hub: Hub | None = None
    try:
        hub = Hub(settings)
        first = bootstrap_admin_token(AccessStore(hub.db), os.environ)
        refresh_broker_auth(hub)  # an external Mosquitto learns the current logins before the hub connects
        hub.start()
    except (HubError, FleetError) as exc:
        sock.close()
        if hub is not None:
            hub.stop()
        fail(exc)
    supplied = bool(os.environ.get(ADMIN_TOKEN_ENV))
    scheme = "https" if settings.api_tls_cert else "http"
    host, port = sock.getsockname()[:2]
    api = f"{scheme}://{host}:{port}"
    ready = f"hub: broker {hub.broker_address.url}, API {api}/docs"
    if as_json:  # stdout, never the log: a log collector should not keep the token
        if first is not None:
            token = None if supplied else first.token
            typer.echo(json.dumps({"admin_token_id": first.row.id, "admin_token": token}))
        typer.echo(json.dumps({"ready": True, "broker": hub.broker_address.url, "api": api}))
    elif first is not None and supplied:
        console.print(f"admin token {first.row.id} stored from ${ADMIN_TOKEN_ENV}")
    elif first is not None:  # printed, never logged: a log collector should not keep it
        console.print(f"admin API token (shown once, store it now): [bold]{first.token}[/bold]", soft_wrap=True)
    if json_logs:
        log.info(ready)
    else:
        console.print(ready, soft_wrap=True, highlight=False)
    config = uvicorn.Config(
        create_app(hub),
        log_config=None,  # the handlers configure_logging installed
        log_level="warning",
        ssl_certfile=str(settings.api_tls_cert) if settings.api_tls_cert else None,
        ssl_keyfile=str(settings.api_tls_key) if settings.api_tls_key else None,
        proxy_headers=False,  # X-Forwarded-For is handled by the app, trusting only settings.trusted_proxies
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        hub.stop()
