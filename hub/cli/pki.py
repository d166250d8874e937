"""``edgefleet pki``: the fleet's certificate authority, the broker's certificate and per-device certificates."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

from hub.errors import HubError

T = TypeVar("T")


def register(app: typer.Typer) -> None:
    """Add the ``pki`` command group to ``app``."""
    pki_app = typer.Typer(help="Certificates for TLS between devices, the broker and the hub.", no_args_is_help=True)
    issue_app = typer.Typer(help="Issue a certificate signed by the fleet CA.", no_args_is_help=True)
    app.add_typer(pki_app, name="pki")
    pki_app.add_typer(issue_app, name="issue")

    @pki_app.command("init")
    def init(
        out: Path = typer.Option(Path("var/pki"), help="directory for ca.crt and the owner-only ca.key"),
        name: str = typer.Option("EdgeFleet fleet CA", help="the CA's common name"),
        days: int = typer.Option(3650, min=1, help="validity in days"),
    ) -> None:
        """Create the fleet CA (refuses to overwrite one)."""
        from hub.devices.pki import CertificateAuthority

        ca = _run(lambda: CertificateAuthority.create(out, name=name, days=days))
        typer.echo(json.dumps({"ca_cert": str(ca.cert_file), "ca_key": str(ca.key_file)}))

    @issue_app.command("broker")
    def broker(
        host: list[str] = typer.Option(["127.0.0.1", "localhost"], help="host names or addresses, repeatable"),
        ca: Path = typer.Option(Path("var/pki"), help="the CA directory"),
        out: Path = typer.Option(Path("var/pki/broker"), help="where to write the certificate and key"),
        days: int = typer.Option(825, min=1),
    ) -> None:
        """A server certificate for the broker (or the REST API) valid for each --host."""
        from hub.devices.pki import CertificateAuthority

        issued = _run(lambda: CertificateAuthority(ca).issue_server(out, host, days=days))
        typer.echo(json.dumps({"cert": str(issued.cert_file), "key": str(issued.key_file)}))

    @issue_app.command("device")
    def device(
        device_id: str,
        ca: Path = typer.Option(Path("var/pki"), help="the CA directory"),
        out: Path = typer.Option(Path("var/pki/devices"), help="where to write the certificate and key"),
        days: int = typer.Option(825, min=1),
    ) -> None:
        """A client certificate whose common name is DEVICE_ID."""
        from hub.devices.pki import CertificateAuthority

        issued = _run(lambda: CertificateAuthority(ca).issue_client(out, device_id, days=days))
        typer.echo(json.dumps({"device_id": device_id, "cert": str(issued.cert_file), "key": str(issued.key_file)}))


def _run(action: Callable[[], T]) -> T:
    """Run ``action``; a hub or protocol error becomes a one-line message and exit status 1."""
    from fleet.errors import FleetError

    try:
        return action()
    except (HubError, FleetError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
