"""``edgefleet pki``: a CA, the broker's certificate and device certificates, keys owner-only."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from hub.cli import app


def _invoke(*args: str) -> dict[str, str]:
    result = CliRunner().invoke(app, ["pki", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_init_and_issue_write_verifiable_certificates_with_private_keys(tmp_path: Path) -> None:
    ca = _invoke("init", "--out", str(tmp_path / "ca"))
    broker = _invoke(
        "issue",
        "broker",
        "--ca",
        str(tmp_path / "ca"),
        "--out",
        str(tmp_path / "b"),
        "--host",
        "broker.example",
        "--host",
        "10.0.0.5",
    )
    device = _invoke("issue", "device", "cam-7", "--ca", str(tmp_path / "ca"), "--out", str(tmp_path / "d"))
    for key in (ca["ca_key"], broker["key"], device["key"]):
        assert stat.S_IMODE(Path(key).stat().st_mode) == 0o600
    ca_cert = x509.load_pem_x509_certificate(Path(ca["ca_cert"]).read_bytes())
    server = x509.load_pem_x509_certificate(Path(broker["cert"]).read_bytes())
    client = x509.load_pem_x509_certificate(Path(device["cert"]).read_bytes())
    for cert in (server, client):
        cert.verify_directly_issued_by(ca_cert)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-7"
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_init_refuses_to_replace_a_ca_and_issue_needs_one(tmp_path: Path) -> None:
    _invoke("init", "--out", str(tmp_path / "ca"))
    again = CliRunner().invoke(app, ["pki", "init", "--out", str(tmp_path / "ca")])
    assert again.exit_code == 1 and "exists" in again.output and "Traceback" not in again.output
    missing = CliRunner().invoke(app, ["pki", "issue", "device", "cam-1", "--ca", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "no CA in" in missing.output
    bad_id = CliRunner().invoke(app, ["pki", "issue", "device", "../etc", "--ca", str(tmp_path / "ca")])
    assert bad_id.exit_code == 1 and "invalid device id" in bad_id.output


def test_status_warns_ahead_of_expiry_and_renewal_clears_it_months_later(tmp_path: Path) -> None:
    import datetime as dt

    import time_machine

    ca_dir = str(tmp_path / "ca")
    _invoke("init", "--out", ca_dir)
    broker = _invoke("issue", "broker", "--ca", ca_dir, "--out", str(tmp_path / "ca" / "broker"))
    fine = CliRunner().invoke(app, ["pki", "status", "--ca", ca_dir, "--json"])
    assert fine.exit_code == 0, fine.output
    assert json.loads(fine.stdout)["attention"] == 0
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=810), tick=False):
        late = CliRunner().invoke(app, ["pki", "status", "--ca", ca_dir])
        assert late.exit_code == 1 and "Traceback" not in late.output
        assert f"warning: {broker['cert']}" in late.stderr and "expires in 15.0 days" in late.stderr
        renewed = _invoke("renew", "cert", broker["cert"], "--ca", ca_dir)
        assert renewed["cert"] == broker["cert"]
        again = CliRunner().invoke(app, ["pki", "status", "--ca", ca_dir, "--warn-days", "60"])
        assert again.exit_code == 0, again.output
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=3640), tick=False):
        ca_late = CliRunner().invoke(app, ["pki", "status", "--ca", ca_dir, "--json"])
        assert ca_late.exit_code == 1
        ca_row = next(row for row in json.loads(ca_late.stdout)["certificates"] if row["ca"])
        assert ca_row["days_left"] == 10.0
        _invoke("renew", "ca", "--ca", ca_dir)
        ca_cert = x509.load_pem_x509_certificate((tmp_path / "ca" / "ca.crt").read_bytes())
        assert ca_cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=3600)


def test_renew_refuses_a_certificate_of_another_ca_in_one_line(tmp_path: Path) -> None:
    _invoke("init", "--out", str(tmp_path / "ca"))
    _invoke("init", "--out", str(tmp_path / "other"))
    foreign = _invoke("issue", "device", "cam-1", "--ca", str(tmp_path / "other"), "--out", str(tmp_path / "d"))
    result = CliRunner().invoke(app, ["pki", "renew", "cert", foreign["cert"], "--ca", str(tmp_path / "ca")])
    assert result.exit_code == 1 and "was not issued by the CA" in result.output and "Traceback" not in result.output
