"""Commands run on the hub's machine: ``hub serve``, ``hub migrate``, ``broker auth-files``,
``models register-conversion`` (they use its database and keys directly), and ``demo``."""

from __future__ import annotations

import json
import logging
import signal
import socket
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from hub.config import HubSettings
from hub.errors import HubError

console = Console(stderr=True)
log = logging.getLogger("hub")


def register(app: typer.Typer) -> None:
    """Add the hub's commands to ``app``."""
    hub_app = typer.Typer(help="Run the hub.", no_args_is_help=True)
    app.add_typer(hub_app, name="hub")
    broker_app = typer.Typer(help="The external broker's access control.", no_args_is_help=True)
    app.add_typer(broker_app, name="broker")

    @broker_app.command("auth-files")
    def auth_files(
        out: Path = typer.Option(..., help="directory for the password and ACL files"),
        data_dir: Path = typer.Option(Path("var/hub")),
        database_url: str | None = typer.Option(None),
        port: int = typer.Option(1883, help="the device listener's port (8883 is usual with TLS)"),
        host: str = typer.Option("127.0.0.1", help="the device listener's address"),
        tls_cert: Path | None = typer.Option(None, help="serve TLS with this certificate (`edgefleet pki issue`)"),
        tls_key: Path | None = typer.Option(None, help="its private key"),
        client_ca: Path | None = typer.Option(None, help="CA of device certificates (mutual TLS)"),
        require_client_cert: bool = typer.Option(False, help="devices must present a certificate; its CN is the login"),
    ) -> None:
        """Write Mosquitto's password and ACL files from the inventory (reload Mosquitto with SIGHUP after),
        and print the listener configuration to include."""
        from hub.app import Hub
        from hub.devices.broker_acl import BrokerUser, hub_user, mosquitto_config, write_broker_auth
        from hub.devices.pki import ServerTls

        hub = Hub(HubSettings(data_dir=data_dir, database_url=database_url))
        try:
            devices = hub.registry.list_devices()
            users = [hub_user(hub.hub_secret)] + [
                BrokerUser(username=d.id, password_hash=d.broker_hash, role="device") for d in devices if d.broker_hash
            ]
        finally:
            hub.db.close()
        files = write_broker_auth(out, users)
        if (tls_cert is None) != (tls_key is None) or (require_client_cert and client_ca is None):
            raise typer.BadParameter("--tls-cert and --tls-key go together; --require-client-cert needs --client-ca")
        tls = (
            ServerTls(str(tls_cert), str(tls_key), str(client_ca) if client_ca else None, require_client_cert)
            if tls_cert and tls_key
            else None
        )
        typer.echo(mosquitto_config(files, port=port, host=host, tls=tls))
        console.print(f"{len(users) - 1} devices and the hub written to {files.password_file} and {files.acl_file}")

    models_app = typer.Typer(help="Models, versions and their variants.", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def list_models(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
        """Models with their versions (highest first), from the hub's REST API."""
        from hub.cli.remote import emit, hub_session

        with hub_session() as hub:
            emit(hub.get("/models"), as_json, _print_models)

    @models_app.command("register-conversion")
    def register(
        directory: Path = typer.Argument(..., help="an `edgefleet convert` output directory"),
        version: str = typer.Option(..., help="semver of the new model version"),
        vectors: Path = typer.Option(..., help=".npz of model inputs for the golden self-test vectors"),
        model: str | None = typer.Option(None, help="model name (default: the report's)"),
        labels: str | None = typer.Option(None, help="comma-separated class labels"),
        data_dir: Path = typer.Option(Path("var/hub")),
        database_url: str | None = typer.Option(None),
        gate: Path | None = typer.Option(None, help="gate thresholds (TOML): refuse unless `edgefleet gate` passes"),
        contract: Path | None = typer.Option(
            None, help="data contract (JSON/TOML) the bundles carry; default: the conversion's contract.json"
        ),
    ) -> None:
        """Sign and register every usable variant of a conversion under MODEL:VERSION."""
        from hub.app import Hub
        from hub.bundles.conversions import register_conversion
        from hub.cli.contract import load_contract_option
        from hub.cli.gate import run_gate

        if gate is not None:
            verdict = run_gate(directory, gate, None)
            if not verdict.passed:
                typer.echo(verdict.table(), err=True)
                typer.echo(f"error: {directory} failed the gate {gate}; nothing registered", err=True)
                raise typer.Exit(1)

        hub = Hub(HubSettings(data_dir=data_dir, database_url=database_url))
        try:
            result = register_conversion(
                hub,
                directory,
                version=version,
                vectors=vectors,
                model=model,
                labels=labels.split(",") if labels else None,
                contract=load_contract_option(contract),
            )
        finally:
            hub.db.close()
        typer.echo(
            json.dumps(
                {
                    "model": result.model,
                    "version": result.version,
                    "registered": result.registered,
                    "skipped": result.skipped,
                },
                indent=2,
            )
        )

    @hub_app.command("serve")
    def serve(
        config: Path | None = typer.Option(None, "--config", help="settings file (TOML, HubSettings field names)"),
        data_dir: Path | None = typer.Option(None, help="registry, artifacts and TUF keys [var/hub]"),
        broker_url: str | None = typer.Option(None, help="mqtt://host:port; omitted: embedded broker"),
        database_url: str | None = typer.Option(None, help="SQLAlchemy URL; omitted: SQLite in data dir"),
        artifact_store: str | None = typer.Option(
            None, help="s3://bucket[/prefix]?endpoint=URL (S3-compatible); omitted: data dir/artifacts"
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
    ) -> None:
        """Start the hub (REST API, MQTT wiring; an in-process broker when no broker URL is given).

        On first start it prints an admin API token once (or stores $EDGEFLEET_ADMIN_TOKEN).
        Settings come from these flags, then EDGEFLEET_* environment variables (EDGEFLEET_API_PORT=9000), then
        the --config file, then the defaults shown in brackets."""
        from hub.cli.logs import configure_logging
        from hub.config import load_settings

        if log_format not in ("text", "json"):
            _fail(f"--log-format must be text or json, not {log_format!r}")
        configure_logging("json" if log_format == "json" else "text")
        try:
            settings = load_settings(
                config,
                defaults={"broker_port": 1883},  # a served hub's embedded broker listens where devices expect it
                data_dir=data_dir,
                broker_url=broker_url,
                database_url=database_url,
                artifact_store=artifact_store,
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
            _fail(str(exc))
        _run_hub(settings, json_logs=log_format == "json")

    @hub_app.command("migrate")
    def migrate(
        data_dir: Path = typer.Option(Path("var/hub"), help="registry, artifacts and TUF keys"),
        database_url: str | None = typer.Option(None, help="SQLAlchemy URL; omitted: SQLite in data dir"),
    ) -> None:
        """Bring the registry's schema to this release's revision (``hub serve`` also does it at start)."""
        from hub.errors import HubError
        from hub.registry import Database

        try:
            db = Database(HubSettings(data_dir=data_dir, database_url=database_url).resolved_database_url())
        except HubError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
        db.close()
        result = db.migration
        typer.echo(f"schema revision: from {result.from_revision or 'none (empty database)'} to {result.to_revision}")
        if result.backup is not None:
            typer.echo(f"the database as it was: {result.backup}")

    @app.command("demo")
    def demo(
        devices: int = typer.Option(5, min=1, max=200, help="simulated devices"),
        requests: int = typer.Option(50, min=1, help="inference requests per device"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
        broker_url: str | None = typer.Option(None, help="use this broker instead of the embedded one"),
    ) -> None:
        """Train a model, ship it to a simulated fleet, drive traffic, and summarise."""
        from hub.demo.run import run_demo

        signal.signal(signal.SIGTERM, _interrupt)  # run the demo's clean-up (agents, broker) on SIGTERM too
        summary = run_demo(
            devices, requests_per_device=requests, broker_url=broker_url, log=None if as_json else console.print
        )
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
        else:
            _print_summary(summary)
        raise typer.Exit(0 if summary["ok"] else 1)


def _fail(message: str) -> NoReturn:
    """One line on stderr (a driver's multi-line message joined), exit status 1."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(1)


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


def _run_hub(settings: HubSettings, *, json_logs: bool) -> None:
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
        _fail(str(exc))
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
        _fail(str(exc))
    if first is not None and os.environ.get(ADMIN_TOKEN_ENV):
        console.print(f"admin token {first.row.id} stored from ${ADMIN_TOKEN_ENV}")
    elif first is not None:  # printed, never logged: a log collector should not keep it
        console.print(f"admin API token (shown once, store it now): [bold]{first.token}[/bold]", soft_wrap=True)
    scheme = "https" if settings.api_tls_cert else "http"
    host, port = sock.getsockname()[:2]
    ready = f"hub: broker {hub.broker_address.url}, API {scheme}://{host}:{port}/docs"
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


def _print_models(models: list[dict[str, object]]) -> None:
    table = Table("model", "versions", "description")
    for m in models:
        versions = m["versions"]
        table.add_row(
            str(m["name"]), ", ".join(map(str, versions)) if isinstance(versions, list) else "", str(m["description"])
        )
    Console().print(table)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _print_summary(summary: dict[str, object]) -> None:
    out = Console()
    table = Table(title=f"EdgeFleet demo: digits:1.0.0 on {summary['devices_total']} devices")
    table.add_column("device")
    table.add_column("deployment")
    table.add_column("inferences ok", justify="right")
    table.add_column("accuracy", justify="right")
    devices = summary["devices"]
    deployment = summary["deployment"]
    assert isinstance(devices, dict) and isinstance(deployment, dict)
    for device_id, stats in devices.items():
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
