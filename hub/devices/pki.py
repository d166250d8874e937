"""A small private PKI for the device plane: one CA, the broker's server certificate, one client certificate
per device (common name = device id, so a broker can bind the TLS identity to the login).

Keys are EC P-256, written owner-only (0600) next to their PEM certificates::

    ca = CertificateAuthority.create(Path("pki"), name="EdgeFleet fleet CA")
    ca.issue_server(Path("pki/broker"), hosts=["broker.example.com", "127.0.0.1"])
    ca.issue_client(Path("pki/devices/cam-1"), "cam-1")

Certificates are renewed, not replaced: `CertificateAuthority.renew` re-signs the CA with its own key (every
issued certificate stays valid), `renew_issued` re-issues a broker or device certificate with a fresh key and
the same names, and `sign_request` signs a device's own CSR (the agent renews itself over MQTT, see
`hub.devices.certificates`). `certificate_info` reads a certificate's expiry for `edgefleet pki status` and the
hub's ``edgefleet_tls_certificate_expiry_seconds`` gauge.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.wire.topics import validate_device_id
from hub.errors import ConflictError, InvalidRequestError, NotFoundError

__all__ = ["CertificateAuthority", "CertificateInfo", "IssuedCertificate", "ServerTls", "certificate_info"]

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


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What an operator needs to know about one certificate file."""

    path: Path
    subject: str
    issuer: str
    not_after: dt.datetime
    is_ca: bool

    def seconds_left(self, now: dt.datetime | None = None) -> float:
        """Seconds until the certificate expires (negative once it has)."""
        return (self.not_after - (now or dt.datetime.now(dt.UTC))).total_seconds()


def certificate_info(path: Path) -> CertificateInfo:
    """Read the subject, issuer and expiry of the PEM certificate at ``path``."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidRequestError(f"cannot read certificate {path}: {exc}") from exc
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertificateInfo(
        path, cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.not_valid_after_utc, is_ca
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` owner-only, atomically: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(partial, 0o600)  # also when a partial file was left with wider permissions
    os.replace(partial, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


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
        from cryptography.x509.oid import NameOID

        if (directory / CA_KEY).exists():
            raise ConflictError(f"{directory / CA_KEY} exists; a new CA would orphan every issued certificate")
        key = _new_key()
        cert = _self_signed(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), days)
        _write_private(directory / CA_KEY, _pem_key(key))
        _write_public(directory / CA_CERT, _pem_cert(cert))
        return cls(directory)

    def renew(self, *, days: int = 3650) -> CertificateInfo:
        """Re-sign the CA certificate with its own key and subject for ``days`` from now.

        Every certificate it issued stays valid (same issuer name and key), so devices and brokers only need
        the new ``ca.crt``. The previous certificate is kept beside it as ``ca-until-YYYYMMDD.crt``.
        """
        old = certificate_info(self.cert_file)
        key = self._key()
        cert = _self_signed(key, self._certificate().subject, days)
        backup = self.directory / f"ca-until-{old.not_after:%Y%m%d}.crt"
        _write_public(backup, self.cert_file.read_bytes())
        _write_public(self.cert_file, _pem_cert(cert))
        return certificate_info(self.cert_file)

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

    def renew_issued(self, cert_file: Path, *, days: int = 825) -> IssuedCertificate:
        """Re-issue the certificate at ``cert_file`` (same names and use, a fresh key) for ``days`` from now.

        The key is expected beside it as ``NAME.key``; both files are replaced atomically, key first.
        """
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        try:
            old = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise InvalidRequestError(f"cannot read certificate {cert_file}: {exc}") from exc
        try:
            old.verify_directly_issued_by(self._certificate())
        except (ValueError, TypeError, InvalidSignature):
            raise InvalidRequestError(f"{cert_file} was not issued by the CA in {self.directory}") from None
        names = old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = str(names[0].value) if names else cert_file.stem
        try:
            usage = old.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            server = ExtendedKeyUsageOID.SERVER_AUTH in usage
        except x509.ExtensionNotFound:
            server = False
        try:
            san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            hosts = [str(name.value) for name in san]
        except x509.ExtensionNotFound:
            hosts = []
        return self._issue(cert_file.parent, common_name=common_name, hosts=hosts, server=server, days=days)

    def sign_request(self, csr_pem: bytes, device_id: str, *, days: int = 825) -> bytes:
        """Sign a device's certificate signing request; the CSR must name ``device_id`` and be self-signed.

        Returns the PEM certificate. Only the public key is taken from the CSR: names, usage and validity are
        the CA's, so a device cannot ask for more than a client certificate for itself.
        """
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise InvalidRequestError(f"certificate request from {device_id} is not a PEM CSR: {exc}") from exc
        if not csr.is_signature_valid:
            raise InvalidRequestError(f"certificate request from {device_id} has a bad signature")
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [str(name.value) for name in names] != [device_id]:
            raise InvalidRequestError(f"certificate request from {device_id} names {csr.subject.rfc4514_string()!r}")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise InvalidRequestError(f"certificate request from {device_id}: the key must be EC P-256")
        cert = self._sign(
            common_name=validate_device_id(device_id), hosts=(), server=False, public_key=public_key, days=days
        )
        return _pem_cert(cert)

    def _key(self) -> Any:
        from cryptography.hazmat.primitives import serialization

        return serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)

    def _certificate(self) -> Any:
        from cryptography import x509

        return x509.load_pem_x509_certificate(self.cert_file.read_bytes())

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
        key = _new_key()
        cert = self._sign(
            common_name=common_name,
            hosts=hosts,
            server=server,
            public_key=key.public_key(),  # type: ignore[attr-defined]
            days=days,
            valid_from=valid_from,
        )
        issued = IssuedCertificate(cert_file=out / f"{common_name}.crt", key_file=out / f"{common_name}.key")
        _write_private(issued.key_file, _pem_key(key))
        _write_public(issued.cert_file, _pem_cert(cert))
        return issued

    def _sign(
        self,
        *,
        common_name: str,
        hosts: Sequence[str],
        server: bool,
        public_key: Any,
        days: int,
        valid_from: dt.datetime | None = None,
    ) -> Any:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        start = valid_from or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._certificate().subject)
            .public_key(public_key)
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
        return builder.sign(self._key(), hashes.SHA256())


def _self_signed(key: Any, subject: Any, days: int) -> Any:
    """A CA certificate for ``key`` named ``subject``, valid from now for ``days``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
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
        .sign(key, hashes.SHA256())
    )
