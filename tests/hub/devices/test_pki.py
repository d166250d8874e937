"""The fleet CA over the years: renewing the CA keeps issued certificates valid, renewing a certificate keeps
its names with a fresh key, and a device's CSR is signed only for that device."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.devices.pki import CertificateAuthority, certificate_info
from hub.errors import InvalidRequestError


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _csr(name: str, key: object | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return request.public_bytes(serialization.Encoding.PEM)


def test_renewing_the_ca_ten_years_on_keeps_every_issued_certificate_valid(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    device = ca.issue_client(tmp_path / "devices", "cam-1")
    old_ca = _load(ca.cert_file)
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=3640), tick=False):
        assert certificate_info(ca.cert_file).seconds_left() < 11 * 86400
        info = ca.renew()
        assert info.not_after > dt.datetime.now(dt.UTC) + dt.timedelta(days=3649)
        assert info.is_ca
    new_ca = _load(ca.cert_file)
    assert new_ca.public_key() == old_ca.public_key() and new_ca.subject == old_ca.subject
    _load(device.cert_file).verify_directly_issued_by(new_ca)  # devices keep working with the new ca.crt
    backups = list((tmp_path / "ca").glob("ca-until-*.crt"))
    assert len(backups) == 1 and _load(backups[0]).serial_number == old_ca.serial_number


def test_renewing_a_broker_certificate_keeps_its_names_with_a_fresh_owner_only_key(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    issued = ca.issue_server(tmp_path / "broker", ["broker.example", "10.0.0.5"])
    old_key = issued.key_file.read_bytes()
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=800), tick=False):
        renewed = ca.renew_issued(issued.cert_file)
        assert certificate_info(renewed.cert_file).seconds_left() > 824 * 86400
    assert renewed == issued and renewed.key_file.read_bytes() != old_key
    assert stat.S_IMODE(renewed.key_file.stat().st_mode) == 0o600
    cert = _load(renewed.cert_file)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    private = serialization.load_pem_private_key(renewed.key_file.read_bytes(), password=None)
    assert private.public_key() == cert.public_key()
    assert not list(renewed.cert_file.parent.glob("*.partial"))


def test_a_device_csr_is_signed_as_a_client_certificate_for_that_device_only(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = x509.load_pem_x509_certificate(ca.sign_request(_csr("cam-1", key), "cam-1", days=30))
    cert.verify_directly_issued_by(_load(ca.cert_file))
    assert cert.public_key() == key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-1"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize(
    ("csr", "message"),
    [
        (lambda: _csr("cam-2"), "names 'CN=cam-2'"),
        (lambda: _csr("cam-1", rsa.generate_private_key(public_exponent=65537, key_size=2048)), "EC P-256"),
        (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n", "not a PEM"),
        (lambda: _csr("cam-1").replace(b"\n-----END", b"AAAA\n-----END"), "cam-1"),
    ],
    ids=["another-device", "rsa-key", "garbage", "tampered"],
)
def test_a_bad_csr_is_refused_with_the_reason(tmp_path: Path, csr: object, message: str) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    with pytest.raises(InvalidRequestError, match=message):
        ca.sign_request(csr(), "cam-1")  # type: ignore[operator]
