"""A small private PKI for the device plane: one CA, the broker's server certificate, one client certificate
per device (common name = device id, so a broker can bind the TLS identity to the login).

Keys are EC P-256, written owner-only (0600) next to their PEM certificates::

    ca = CertificateAuthority.create(Path("pki"), name="EdgeFleet fleet CA")
    ca.issue_server(Path("pki/broker"), hosts=["broker.example.com", "127.0.0.1"])
    ca.issue_client(Path("pki/devices/cam-1"), "cam-1")
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet.wire.topics import validate_device_id
from hub.errors import ConflictError, InvalidRequestError, NotFoundError

__all__ = ["CertificateAuthority", "IssuedCertificate", "ServerTls"]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """Where an issued certificate and its key were written."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class ServerTls:
    """TLS for the embedded broker's listener: its certificate and key, and for mutual TLS the CA that signs
    device certificates (``require_client_cert``: every device must present one naming its id)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    require_client_cert: bool = False


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)  # also when the file existed with wider permissions


def _new_key() -> object:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined]


class CertificateAuthority:
    """The fleet CA in ``directory`` (``ca.crt`` and the owner-only ``ca.key``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cert_file = directory / CA_CERT
        self.key_file = directory / CA_KEY
        if not self.cert_file.is_file() or not self.key_file.is_file():
            raise NotFoundError(f"no CA in {directory} (run `edgefleet pki init --out {directory}` first)")

    @classmethod
    def create(cls, directory: Path, *, name: str = "EdgeFleet fleet CA", days: int = 3650) -> CertificateAuthority:
        """Create a new self-signed CA; refuses to overwrite an existing one."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        if (directory / CA_KEY).exists():
            raise ConflictError(f"{directory / CA_KEY} exists; a new CA would orphan every issued certificate")
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())  # type: ignore[attr-defined]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())  # type: ignore[arg-type]
        )
        _write_private(directory / CA_KEY, _pem_key(key))
        (directory / CA_CERT).write_bytes(_pem_cert(cert))
        return cls(directory)

    def issue_server(self, out: Path, hosts: Sequence[str], *, days: int = 825) -> IssuedCertificate:
        """A server certificate for the broker (or the REST API) valid for ``hosts`` (names or IPs)."""
        if not hosts:
            raise InvalidRequestError("a server certificate needs at least one host name or address")
        return self._issue(out, common_name=hosts[0], hosts=hosts, server=True, days=days)

    def issue_client(
        self, out: Path, device_id: str, *, days: int = 825, valid_from: dt.datetime | None = None
    ) -> IssuedCertificate:
        """A client certificate whose common name is ``device_id``."""
        return self._issue(
            out, common_name=validate_device_id(device_id), hosts=(), server=False, days=days, valid_from=valid_from
        )

    def _issue(
        self,
        out: Path,
        *,
        common_name: str,
        hosts: Sequence[str],
        server: bool,
        days: int,
        valid_from: dt.datetime | None = None,
    ) -> IssuedCertificate:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        key = _new_key()
        start = valid_from or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())  # type: ignore[attr-defined]
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        issued = IssuedCertificate(cert_file=out / f"{common_name}.crt", key_file=out / f"{common_name}.key")
        _write_private(issued.key_file, _pem_key(key))
        issued.cert_file.write_bytes(_pem_cert(cert))
        return issued
