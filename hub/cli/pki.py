"""``edgefleet pki``: the fleet's certificate authority, the broker's certificate and per-device certificates, as
files (the CA's key stays where it is made; the hub uses the CA directory named by ``device_ca_dir``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import typer

from hub.cli.output import JSON_ALWAYS_OPTION, JSON_OPTION, fail
from hub.errors import HubError

T = TypeVar("T")


def register(app: typer.Typer) -> None:
    """Add the ``pki`` command group to ``app``."""
    pki_app = typer.Typer(help="Certificates for TLS between devices, the broker and the hub.", no_args_is_help=True)
    issue_app = typer.Typer(help="Issue a certificate signed by the fleet CA.", no_args_is_help=True)
    renew_app = typer.Typer(help="Renew the CA or a certificate it issued, before it expires.", no_args_is_help=True)
    app.add_typer(pki_app, name="pki")
    pki_app.add_typer(issue_app, name="issue")
    pki_app.add_typer(renew_app, name="renew")

    @pki_app.command("init")
    def init(
        out: Path = typer.Option(Path("var/pki"), help="directory for ca.crt and the owner-only ca.key"),
        name: str = typer.Option("EdgeFleet fleet CA", help="the CA's common name"),
        days: int = typer.Option(3650, min=1, help="validity in days"),
        as_json: bool = JSON_ALWAYS_OPTION,
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
        as_json: bool = JSON_ALWAYS_OPTION,
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
        as_json: bool = JSON_ALWAYS_OPTION,
    ) -> None:
        """A client certificate whose common name is DEVICE_ID."""
        from hub.devices.pki import CertificateAuthority

        issued = _run(lambda: CertificateAuthority(ca).issue_client(out, device_id, days=days))
        typer.echo(json.dumps({"device_id": device_id, "cert": str(issued.cert_file), "key": str(issued.key_file)}))

    _status_command(pki_app)
    _renew_commands(renew_app)


def _status_command(pki_app: typer.Typer) -> None:
    @pki_app.command("status")
    def status(
        ca: Path = typer.Option(Path("var/pki"), help="the CA directory; every certificate under it is listed"),
        file: list[Path] = typer.Option([], help="another certificate to check, repeatable"),
        warn_days: int = typer.Option(30, min=0, help="exit 1 when a certificate expires within this many days"),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """List certificates with their expiry; exit 1 if one has expired or expires within --warn-days."""
        from hub.devices.pki import certificate_info

        paths = sorted({*ca.rglob("*.crt"), *file}) if ca.is_dir() else sorted(set(file))
        if not paths:
            fail(f"no certificates under {ca}")
        infos = [_run(partial(certificate_info, path)) for path in paths]
        rows: list[dict[str, Any]] = [
            {
                "path": str(info.path),
                "subject": info.subject,
                "ca": info.is_ca,
                "not_after": info.not_after.isoformat(),
                "days_left": round(info.seconds_left() / 86400, 1),
            }
            for info in infos
        ]
        attention = [row for row in rows if row["days_left"] < warn_days]
        if as_json:
            typer.echo(json.dumps({"certificates": rows, "warn_days": warn_days, "attention": len(attention)}))
        else:
            for row in rows:
                flag = "  <- renew" if row in attention else ""
                typer.echo(
                    f"{row['days_left']:>8} days  {row['not_after'][:10]}  {row['subject']}  {row['path']}{flag}"
                )
        for row in attention:
            typer.echo(f"warning: {row['path']} ({row['subject']}) expires in {row['days_left']} days", err=True)
        if attention:
            raise typer.Exit(1)


def _renew_commands(renew_app: typer.Typer) -> None:
    @renew_app.command("ca")
    def renew_ca(
        ca: Path = typer.Option(Path("var/pki"), help="the CA directory"),
        days: int = typer.Option(3650, min=1, help="validity in days from now"),
        as_json: bool = JSON_ALWAYS_OPTION,
    ) -> None:
        """Re-sign the CA with its own key: issued certificates stay valid; hand out the new ca.crt."""
        from hub.devices.pki import CertificateAuthority

        info = _run(lambda: CertificateAuthority(ca).renew(days=days))
        typer.echo(json.dumps({"ca_cert": str(info.path), "not_after": info.not_after.isoformat()}))

    @renew_app.command("cert")
    def renew_cert(
        cert: Path = typer.Argument(..., help="the certificate to renew; its key NAME.key is beside it"),
        ca: Path = typer.Option(Path("var/pki"), help="the CA directory that issued it"),
        days: int = typer.Option(825, min=1, help="validity in days from now"),
        as_json: bool = JSON_ALWAYS_OPTION,
    ) -> None:
        """Re-issue a broker, API or device certificate with a fresh key and the same names."""
        from hub.devices.pki import CertificateAuthority, certificate_info

        issued = _run(lambda: CertificateAuthority(ca).renew_issued(cert, days=days))
        info = _run(lambda: certificate_info(issued.cert_file))
        typer.echo(
            json.dumps(
                {"cert": str(issued.cert_file), "key": str(issued.key_file), "not_after": info.not_after.isoformat()}
            )
        )


def _run(action: Callable[[], T]) -> T:
    """Run ``action``; a hub or protocol error becomes a one-line message and exit status 1."""
    from fleet.errors import FleetError

    try:
        return action()
    except (HubError, FleetError) as exc:
        fail(exc)
