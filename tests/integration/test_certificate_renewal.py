"""Devices outlive their certificates: 800 days on, a real agent renews its client certificate through a real
hub, on the embedded broker and on Mosquitto, and keeps its identity."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import time_machine
from cryptography import x509
from cryptography.x509.oid import NameOID

from hub.app import Hub
from hub.config import HubSettings
from hub.devices.pki import CertificateAuthority
from tests.integration.fleet_harness import new_agent
from tests.integration.test_telemetry_delivery import free_port
from tests.waiting import wait_until


def test_an_agent_renews_its_certificate_through_the_hub_before_it_expires(
    tmp_path: Path, broker_url: str | None
) -> None:
    ca = CertificateAuthority.create(tmp_path / "pki")
    hub = Hub(
        HubSettings(
            data_dir=tmp_path / "hub", broker_url=broker_url, broker_port=free_port(), device_ca_dir=ca.directory
        )
    )
    hub.start()
    device_id = f"renew-{uuid.uuid4().hex[:6]}"
    issued = ca.issue_client(tmp_path / "certs", device_id)
    old_serial = x509.load_pem_x509_certificate(issued.cert_file.read_bytes()).serial_number
    agent = new_agent(hub, tmp_path, device_id, broker_cert_file=issued.cert_file, broker_key_file=issued.key_file)
    try:
        with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=800)):
            agent.start()
            renewal = agent.certificates
            assert renewal is not None
            assert wait_until(lambda: not renewal.due(), 30)
            cert = x509.load_pem_x509_certificate(issued.cert_file.read_bytes())
            assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=824)
        assert cert.serial_number != old_serial
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device_id
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_file.read_bytes()))
    finally:
        agent.stop()
        hub.stop()
