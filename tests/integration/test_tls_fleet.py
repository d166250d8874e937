"""The hub and real agents over TLS: the embedded broker serves mqtts:// with client certificates required,
an agent with its own certificate installs a deployment, and the REST API answers over HTTPS only."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from fleet.wire.messages import UpdateState
from hub.api import create_app
from hub.app import Hub
from hub.config import HubSettings
from hub.demo.model import TrainedDigits
from hub.devices.pki import CertificateAuthority
from tests.http_server import running_server
from tests.integration.fleet_harness import Harness
from tests.waiting import wait_until


@pytest.fixture
def tls_harness(tmp_path: Path, trained: TrainedDigits) -> Iterator[tuple[Harness, CertificateAuthority]]:
    ca = CertificateAuthority.create(tmp_path / "pki")
    server = ca.issue_server(tmp_path / "pki" / "broker", ["127.0.0.1", "localhost"])
    hub = Hub(
        HubSettings(
            data_dir=tmp_path / "hub",
            chunk_size=4096,
            embedded_tls_cert=server.cert_file,
            embedded_tls_key=server.key_file,
            embedded_client_ca=ca.cert_file,
            require_client_cert=True,
            broker_ca_file=ca.cert_file,
            device_ca_dir=ca.directory,
        )
    )
    hub.start()
    harness = Harness(hub, tmp_path, trained)
    yield harness, ca
    harness.close()


def test_an_agent_with_its_certificate_installs_a_deployment_over_mqtts(
    tls_harness: tuple[Harness, CertificateAuthority], tmp_path: Path
) -> None:
    harness, ca = tls_harness
    assert harness.hub.broker_address.url.startswith("mqtts://")
    harness.publish("1.0.0")
    device_id = f"{harness.prefix}-tls"
    cert = ca.issue_client(tmp_path / "certs", device_id)
    agent = harness.agent(
        "tls", broker_ca_file=ca.cert_file, broker_cert_file=cert.cert_file, broker_key_file=cert.key_file
    )
    assert agent.broker is not None and agent.broker.address.tls is not None
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    assert agent.updater is not None and agent.updater.state.update is not None
    assert agent.updater.state.update.state == UpdateState.DONE


def test_a_certificate_close_to_expiry_is_renewed_over_mqtts_and_the_next_connection_uses_it(
    tls_harness: tuple[Harness, CertificateAuthority], tmp_path: Path
) -> None:
    harness, ca = tls_harness
    device_id = f"{harness.prefix}-renewing"
    cert = ca.issue_client(tmp_path / "certs", device_id, days=30)  # inside the agent's 90-day renewal window
    old = x509.load_pem_x509_certificate(cert.cert_file.read_bytes())
    agent = harness.agent(
        "renewing", broker_ca_file=ca.cert_file, broker_cert_file=cert.cert_file, broker_key_file=cert.key_file
    )
    renewal = agent.certificates
    assert renewal is not None
    assert wait_until(lambda: not renewal.due(), 30)
    assert renewal.expires_at() > old.not_valid_after_utc
    agent.stop()
    restarted = harness.agent_from(agent.config)  # connects with the renewed certificate and key only
    assert restarted.link is not None and restarted.link.wait_connected(30)
    assert x509.load_pem_x509_certificate(cert.cert_file.read_bytes()).serial_number != old.serial_number
    assert wait_until(lambda: harness.hub.registry.get_device(device_id).online, 30)


def test_the_rest_api_serves_https_with_the_fleet_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "pki")
    server = ca.issue_server(tmp_path / "pki" / "api", ["127.0.0.1"])
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))
    try:
        app = create_app(hub)
        with running_server(app, ssl_certfile=str(server.cert_file), ssl_keyfile=str(server.key_file)) as address:
            trusting = ssl.create_default_context(cafile=str(ca.cert_file))
            assert httpx.get(f"https://{address}/health", verify=trusting).status_code == 200
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://{address}/health")  # plain HTTP is not spoken on the TLS port
            with pytest.raises(httpx.ConnectError):  # an untrusting client refuses the certificate
                httpx.get(f"https://{address}/health")
    finally:
        hub.db.close()
