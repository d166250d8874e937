"""The hub's certificate signer: a device's request is answered on its own topic, a repeated request gets the
same certificate, a second key within the interval is refused, and a hub without a CA says so."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet.wire import topics
from fleet.wire.messages import CertificateReply, CertificateRequest, decode
from fleet.wire.transport import InMemoryBroker, Message
from hub.devices.certificates import CertificateSigner
from hub.devices.pki import CertificateAuthority


def _request(device_id: str, request_id: str) -> CertificateRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    return CertificateRequest(device_id=device_id, request_id=request_id, csr_pem=pem)


def _replies(broker: InMemoryBroker, device_id: str) -> list[CertificateReply]:
    replies: list[CertificateReply] = []

    def keep(message: Message) -> None:
        replies.append(decode(CertificateReply, message.payload))

    broker.subscribe(topics.device_topic(device_id, "certificate"), keep)
    return replies


def test_a_request_is_signed_once_and_a_repeat_gets_the_same_certificate(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    now = [1000.0]
    signer = CertificateSigner(
        broker, CertificateAuthority.create(tmp_path / "ca"), min_interval_s=3600, clock=lambda: now[0]
    )
    replies = _replies(broker, "cam-1")
    first = _request("cam-1", "request-0001")
    signer.handle(first)
    signer.handle(first)  # the reply was lost: the device asks again
    assert len(replies) == 2 and replies[0].cert_pem and replies[0] == replies[1]
    signer.handle(_request("cam-1", "request-0002"))  # another key within the hour
    assert replies[2].cert_pem is None and "recently" in (replies[2].error or "")
    now[0] += 3601
    signer.handle(_request("cam-1", "request-0003"))
    assert replies[3].cert_pem and replies[3].cert_pem != replies[0].cert_pem


def test_a_bad_request_and_a_hub_without_a_ca_are_answered_with_the_reason(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    replies = _replies(broker, "cam-1")
    signer = CertificateSigner(broker, CertificateAuthority.create(tmp_path / "ca"))
    forged = _request("cam-2", "request-0001").model_copy(update={"device_id": "cam-1"})
    signer.handle(forged)
    CertificateSigner(broker, None).handle(_request("cam-1", "request-0002"))
    assert [r.cert_pem for r in replies] == [None, None]
    assert "names 'CN=cam-2'" in (replies[0].error or "")
    assert "no device CA" in (replies[1].error or "")
