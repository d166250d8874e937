"""The device renews its own TLS client certificate before it expires, over its authenticated broker link.

A device certificate lives 825 days and a device in the field outlives it. Once fewer than
``renew_before`` remain, the agent makes a fresh EC P-256 key, sends a CSR naming itself on its
``certificate-request`` topic, and installs the certificate the hub answers on its ``certificate`` topic
(see `hub.devices.certificates`). The current connection stays up; the next connection uses the new pair.

Crash safety: the new key waits in ``KEY.pending`` and the certificate in ``CERT.pending``; they replace the
live files key first, then certificate. `recover` at start finishes a swap a crash interrupted, so the live
key and certificate always match.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from agent.errors import CertificateError
from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.messages import CertificateReply, CertificateRequest, decode, encode
from fleet.wire.transport import Message

__all__ = ["CertificateRenewal"]

log = logging.getLogger(__name__)


class CertificateRenewal:
    """Renews the certificate at ``cert_file`` (key at ``key_file``) of ``device_id`` through ``link``.

    `attach` gives it the link to the hub (an `agent.link.BrokerLink` or any broker); `recover` runs before.
    """

    def __init__(self, device_id: str, cert_file: Path, key_file: Path, *, renew_before: dt.timedelta) -> None:
        self._link: Any = None
        self.device_id = device_id
        self.cert_file = cert_file
        self.key_file = key_file
        self.renew_before = renew_before
        self._pending_key = key_file.with_name(key_file.name + ".pending")
        self._pending_cert = cert_file.with_name(cert_file.name + ".pending")
        self._lock = threading.Lock()
        self._request_id: str | None = None
        self._outcome = threading.Condition(self._lock)
        self._result: str | None = None  # "installed" or the refusal, for the request in flight

    def recover(self) -> None:
        """Finish a swap a crash interrupted; forget a request that never got its answer."""
        if self._pending_cert.exists():
            pending_cert = self._pending_cert.read_bytes()
            if self._pending_key.exists() and _matches(pending_cert, self._pending_key.read_bytes()):
                os.replace(self._pending_key, self.key_file)
            if _matches(pending_cert, self.key_file.read_bytes()):
                os.replace(self._pending_cert, self.cert_file)
                log.info("%s: finished installing a renewed certificate after a restart", self.device_id)
            else:
                self._pending_cert.unlink()
        self._pending_key.unlink(missing_ok=True)

    def expires_at(self) -> dt.datetime:
        """When the live certificate expires."""
        from cryptography import x509

        try:
            return x509.load_pem_x509_certificate(self.cert_file.read_bytes()).not_valid_after_utc
        except (OSError, ValueError) as exc:
            raise CertificateError(f"cannot read the device certificate {self.cert_file}: {exc}") from exc

    def due(self, now: dt.datetime | None = None) -> bool:
        """Whether the certificate is within ``renew_before`` of its expiry (or past it)."""
        return self.expires_at() - (now or dt.datetime.now(dt.UTC)) <= self.renew_before

    def attach(self, link: Any) -> None:
        """Talk to the hub through ``link`` and listen for its answers (call once, before `renew`)."""
        self._link = link
        link.subscribe(topics.device_topic(self.device_id, "certificate"), self._on_reply, qos=1)

    def renew(self, timeout_s: float) -> None:
        """Ask the hub for a new certificate and install it; raise `CertificateError` when refused or unanswered."""
        if self._link is None:
            raise CertificateError("certificate renewal is not attached to a broker link")
        key = _new_key()
        _write_private(self._pending_key, _pem_key(key))
        request = CertificateRequest(
            device_id=self.device_id, request_id=uuid.uuid4().hex, csr_pem=_csr(key, self.device_id).decode()
        )
        with self._lock:
            self._request_id, self._result = request.request_id, None
        self._link.publish(topics.device_topic(self.device_id, "certificate-request"), encode(request), qos=1)
        with self._outcome:
            answered = self._outcome.wait_for(lambda: self._result is not None, timeout_s)
            result, self._request_id = self._result, None
        if not answered:
            self._pending_key.unlink(missing_ok=True)
            raise CertificateError(f"the hub did not answer the certificate request within {timeout_s:.0f} s")
        if result != "installed":
            self._pending_key.unlink(missing_ok=True)
            raise CertificateError(f"the hub refused to renew the certificate: {result}")

    def cancel(self) -> None:
        """End a `renew` waiting for its answer (the agent is stopping); the live files stay as they are."""
        with self._outcome:
            if self._request_id is not None and self._result is None:
                self._result = "cancelled: the agent is stopping"
                self._request_id = None
                self._outcome.notify_all()

    def _on_reply(self, message: Message) -> None:
        try:
            reply = decode(CertificateReply, message.payload, topic=message.topic)
        except ProtocolError as exc:
            log.warning("%s: ignored certificate reply: %s", self.device_id, exc)
            return
        with self._outcome:
            if reply.request_id != self._request_id:
                return  # a late answer to an earlier request, or a duplicate
            try:
                self._result = reply.error or self._install((reply.cert_pem or "").encode())
            except CertificateError as exc:
                self._result = str(exc)
            self._outcome.notify_all()

    def _install(self, cert_pem: bytes) -> str:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise CertificateError(f"the hub's certificate is not PEM: {exc}") from exc
        names = [str(n.value) for n in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [self.device_id]:
            raise CertificateError(f"the hub's certificate names {cert.subject.rfc4514_string()!r}")
        if not _matches(cert_pem, self._pending_key.read_bytes()):
            raise CertificateError("the hub's certificate is not for the key this device sent")
        _write_private(self._pending_cert, cert_pem)
        os.replace(self._pending_key, self.key_file)
        os.replace(self._pending_cert, self.cert_file)
        log.info("%s: installed a renewed certificate valid until %s", self.device_id, cert.not_valid_after_utc)
        return "installed"


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _csr(key: Any, device_id: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def _matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether the certificate is for the private key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        cert.public_key().public_bytes(serialization.Encoding.PEM, spki)
        == key.public_key().public_bytes(serialization.Encoding.PEM, spki)
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o600)
