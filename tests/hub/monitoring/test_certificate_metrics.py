"""The hub's certificate expiry gauge: one series per certificate it serves or trusts, falling as the clock
moves, and a missing file is logged instead of failing the scrape."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import time_machine
from prometheus_client import CollectorRegistry

from hub.config import HubSettings
from hub.devices.pki import CertificateAuthority
from hub.monitoring.certificate_metrics import CertificateMetrics

NAME = "edgefleet_tls_certificate_expiry_seconds"


def test_every_configured_certificate_has_a_falling_expiry_gauge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = CertificateAuthority.create(tmp_path / "pki")
    broker = ca.issue_server(tmp_path / "pki" / "broker", ["127.0.0.1"])
    api = ca.issue_server(tmp_path / "pki" / "api", ["hub.example"], days=40)
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        embedded_tls_cert=broker.cert_file,
        embedded_tls_key=broker.key_file,
        embedded_client_ca=ca.cert_file,
        api_tls_cert=api.cert_file,
        api_tls_key=api.key_file,
        device_ca_dir=ca.directory,
    )
    registry = CollectorRegistry()
    registry.register(CertificateMetrics(settings.tls_certificates()))

    def left(role: str, subject: str) -> float | None:
        return registry.get_sample_value(NAME, {"role": role, "subject": subject})

    assert left("api", "CN=hub.example") == pytest.approx(40 * 86400, abs=600)
    assert left("embedded_broker", "CN=127.0.0.1") == pytest.approx(825 * 86400, abs=600)
    assert left("device_ca", "CN=EdgeFleet fleet CA") == pytest.approx(3650 * 86400, abs=600)
    assert left("embedded_client_ca", "CN=EdgeFleet fleet CA") is not None
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=50), tick=False):
        assert left("api", "CN=hub.example") == pytest.approx(-10 * 86400, abs=600)
    api.cert_file.unlink()
    assert left("api", "CN=hub.example") is None
    assert left("embedded_broker", "CN=127.0.0.1") is not None
    assert "reading the api certificate for /metrics failed" in caplog.text
