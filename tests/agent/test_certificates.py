"""The agent renews its TLS certificate in time: due only near expiry, installed only when it matches the key it
sent, and a crash in the middle of the swap is finished (or undone) at the next start."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.certificates import CertificateRenewal
from agent.errors import CertificateError
from fleet.wire import topics
from fleet.wire.messages import CertificateReply, CertificateRequest, decode, encode
from fleet.wire.transport import InMemoryBroker, Message
from hub.devices.certificates import CertificateSigner
from hub.devices.pki import CertificateAuthority, IssuedCertificate

RENEW_BEFORE = dt.timedelta(days=90)


def _setup(tmp_path: Path) -> tuple[CertificateAuthority, IssuedCertificate, CertificateRenewal]:
    ca = CertificateAuthority.create(tmp_path / "ca")
    issued = ca.issue_client(tmp_path / "device", "cam-1")
    renewal = CertificateRenewal("cam-1", issued.cert_file, issued.key_file, renew_before=RENEW_BEFORE)
    return ca, issued, renewal


def _public(cert_file: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_public(key_file: Path) -> bytes:
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_eight_hundred_days_on_the_certificate_is_renewed_through_the_hub(tmp_path: Path) -> None:
    ca, issued, renewal = _setup(tmp_path)
    broker = InMemoryBroker()

    def sign(message: Message) -> None:
        signer.handle(decode(CertificateRequest, message.payload))

    signer = CertificateSigner(broker, ca)
    broker.subscribe(topics.device_wildcard("certificate-request"), sign)
    renewal.attach(broker)
    old_key = issued.key_file.read_bytes()
    assert not renewal.due()
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=800), tick=False):
        assert renewal.due()
        renewal.renew(timeout_s=5)
        assert not renewal.due()
        assert renewal.expires_at() > dt.datetime.now(dt.UTC) + dt.timedelta(days=824)
    assert issued.key_file.read_bytes() != old_key
    assert _public(issued.cert_file) == _key_public(issued.key_file)
    assert os.stat(issued.key_file).st_mode & 0o077 == 0
    assert sorted(p.name for p in issued.cert_file.parent.iterdir()) == ["cam-1.crt", "cam-1.key"]


def test_a_refusal_or_silence_leaves_the_live_certificate_alone(tmp_path: Path) -> None:
    _, issued, renewal = _setup(tmp_path)
    broker = InMemoryBroker()
    before = (issued.cert_file.read_bytes(), issued.key_file.read_bytes())

    def refuse(message: Message) -> None:
        request = decode(CertificateRequest, message.payload)
        reply = CertificateReply(device_id="cam-1", request_id=request.request_id, error="not today")
        broker.publish(topics.device_topic("cam-1", "certificate"), encode(reply))

    renewal.attach(broker)
    with pytest.raises(CertificateError, match="did not answer"):
        renewal.renew(timeout_s=0.05)
    broker.subscribe(topics.device_wildcard("certificate-request"), refuse)
    with pytest.raises(CertificateError, match="refused to renew the certificate: not today"):
        renewal.renew(timeout_s=5)
    assert (issued.cert_file.read_bytes(), issued.key_file.read_bytes()) == before
    assert not list(issued.cert_file.parent.glob("*.pending"))


def test_a_certificate_for_another_key_is_not_installed(tmp_path: Path) -> None:
    ca, issued, renewal = _setup(tmp_path)
    broker = InMemoryBroker()
    stranger = ca.issue_client(tmp_path / "other", "cam-1")  # right name, a key this device never sent

    def answer_with_a_stranger(message: Message) -> None:
        request = decode(CertificateRequest, message.payload)
        reply = CertificateReply(
            device_id="cam-1", request_id=request.request_id, cert_pem=stranger.cert_file.read_text()
        )
        broker.publish(topics.device_topic("cam-1", "certificate"), encode(reply))

    broker.subscribe(topics.device_wildcard("certificate-request"), answer_with_a_stranger)
    renewal.attach(broker)
    before = issued.cert_file.read_bytes()
    with pytest.raises(CertificateError, match="not for the key this device sent"):
        renewal.renew(timeout_s=5)
    assert issued.cert_file.read_bytes() == before


@pytest.mark.parametrize("crash_after", ["pending-written", "key-replaced"])
def test_a_swap_interrupted_by_a_crash_is_finished_at_start(tmp_path: Path, crash_after: str) -> None:
    ca, issued, renewal = _setup(tmp_path)
    new = ca.issue_client(tmp_path / "new", "cam-1")
    pending_key = issued.key_file.with_name("cam-1.key.pending")
    pending_cert = issued.cert_file.with_name("cam-1.crt.pending")
    pending_key.write_bytes(new.key_file.read_bytes())
    pending_cert.write_bytes(new.cert_file.read_bytes())
    if crash_after == "key-replaced":
        os.replace(pending_key, issued.key_file)  # the live key is new, the live certificate still old
    renewal.recover()
    assert issued.cert_file.read_bytes() == new.cert_file.read_bytes()
    assert issued.key_file.read_bytes() == new.key_file.read_bytes()
    assert not pending_key.exists() and not pending_cert.exists()


def test_a_request_that_never_got_its_answer_is_forgotten_at_start(tmp_path: Path) -> None:
    ca, issued, renewal = _setup(tmp_path)
    before = (issued.cert_file.read_bytes(), issued.key_file.read_bytes())
    issued.key_file.with_name("cam-1.key.pending").write_bytes(
        ca.issue_client(tmp_path / "x", "cam-1").key_file.read_bytes()
    )
    renewal.recover()
    assert (issued.cert_file.read_bytes(), issued.key_file.read_bytes()) == before
    assert not list(issued.cert_file.parent.glob("*.pending"))
