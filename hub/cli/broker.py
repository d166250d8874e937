"""``edgefleet broker auth-files``: Mosquitto's password and ACL files, or with ``--broker nats`` a NATS server's
authorization include file, fetched from the hub's REST API (admin token).

It runs on the broker's host, which need not be the hub's: the hub renders the files from its inventory
(``GET /broker/auth-files``), the command writes them atomically and prints the configuration to include.
A hub with ``broker_auth_dir`` keeps Mosquitto's files current by itself when Mosquitto shares its host.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hub.cli.output import JSON_OPTION, emit, fail
from hub.cli.remote import hub_session

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the ``broker`` group to ``app``."""
    broker_app = typer.Typer(help="The external broker's access control.", no_args_is_help=True)
    broker_app.command("auth-files")(auth_files)
    app.add_typer(broker_app, name="broker")


def auth_files(
    out: Path = typer.Option(..., help="directory for the password and ACL files (NATS: nats-auth.conf)"),
    broker: str = typer.Option("mosquitto", help="the broker they are for: mosquitto or nats"),
    port: int = typer.Option(1883, help="the device listener's port (8883 is usual with TLS)"),
    host: str = typer.Option("127.0.0.1", help="the device listener's address"),
    tls_cert: Path | None = typer.Option(None, help="serve TLS with this certificate (`edgefleet pki issue`)"),
    tls_key: Path | None = typer.Option(None, help="its private key"),
    client_ca: Path | None = typer.Option(None, help="CA of device certificates (mutual TLS)"),
    require_client_cert: bool = typer.Option(False, help="devices must present a certificate; its CN is the login"),
    config_dir: Path | None = typer.Option(
        None, help="NATS: directory of the config file that includes the auth file (default: --out)"
    ),
    replicas: int | None = typer.Option(
        None, min=1, help="NATS: stream and consumer replicas of MQTT's state (the cluster's node count)"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write Mosquitto's password and ACL files from the hub's inventory (reload Mosquitto with SIGHUP after),
    or with ``--broker nats`` NATS's authorization include file (devices log in with their certificate; reload
    with ``nats-server --signal reload``), and print the configuration to include."""
    if broker == "nats":
        _nats_auth_file(out, port, host, tls_cert, tls_key, client_ca, config_dir, replicas, as_json)
        return
    if broker != "mosquitto":
        fail(f"--broker must be mosquitto or nats, not {broker!r}", code=2)
    from hub.devices.mosquitto import mosquitto_config, write_auth_files
    from hub.devices.pki import ServerTls

    if (tls_cert is None) != (tls_key is None) or (require_client_cert and client_ca is None):
        fail("--tls-cert and --tls-key go together; --require-client-cert needs --client-ca", code=2)
    with hub_session() as hub:
        answer = hub.get("/broker/auth-files")
    try:
        files = write_auth_files(out, answer["passwd"], answer["acl"])
    except OSError as exc:
        fail(f"cannot write the broker's files to {out}: {exc}")
    tls = (
        ServerTls(str(tls_cert), str(tls_key), str(client_ca) if client_ca else None, require_client_cert)
        if tls_cert and tls_key
        else None
    )
    config = mosquitto_config(files, port=port, host=host, tls=tls)
    result = {
        "password_file": str(files.password_file),
        "acl_file": str(files.acl_file),
        "devices": answer["devices"],
        "listener_config": config,
    }

    def show(_: object) -> None:
        typer.echo(config)
        console.print(f"{answer['devices']} devices and the hub written to {files.password_file} and {files.acl_file}")

    emit(result, as_json, show)


def _nats_auth_file(
    out: Path,
    port: int,
    host: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    client_ca: Path | None,
    config_dir: Path | None,
    replicas: int | None,
    as_json: bool,
) -> None:
    """``--broker nats``: write ``nats-auth.conf`` (owner-only) and print the include and MQTT listener lines."""
    from hub.devices.nats_config import nats_config, write_nats_auth
    from hub.devices.pki import ServerTls

    if tls_cert is None or tls_key is None or client_ca is None:
        fail("--broker nats needs --tls-cert, --tls-key and --client-ca: devices log in with their certificate", code=2)
    with hub_session() as hub:
        answer = hub.get("/broker/auth-files", broker="nats")
    try:
        path = write_nats_auth(out, answer["authorization"])
    except OSError as exc:
        fail(f"cannot write the NATS auth file to {out}: {exc}")
    tls = ServerTls(str(tls_cert), str(tls_key), str(client_ca), True)
    config = nats_config(path, config_dir=config_dir, port=port, host=host, tls=tls, replicas=replicas)
    left_out = list(answer["left_out"])
    result = {
        "broker": "nats",
        "auth_file": str(path),
        "devices": answer["devices"],
        "left_out": left_out,
        "config": config,
    }

    def show(_: object) -> None:
        typer.echo(config)
        console.print(
            f"{answer['devices']} devices (certificate CN = device id, plus its secret) and the hub written to {path}; "
            "reload with `nats-server --signal reload`"
        )
        if left_out:
            names = ", ".join(left_out[:10]) + (f" and {len(left_out) - 10} more" if len(left_out) > 10 else "")
            console.print(
                f"warning: {len(left_out)} devices provisioned before NATS password hashes were stored are left out "
                f"and cannot log in to NATS ({names}): give each a new secret and kit "
                "(`edgefleet devices rekey ID --out DIR`), then run this command again"
            )

    emit(result, as_json, show)
