"""Device traffic over TLS with client certificates, on the embedded broker and on a private Mosquitto whose
configuration `mosquitto_config` generates: traffic flows, and a wrong CA, an expired certificate and a
certificate for another device are refused."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.wire.acl import HUB_USERNAME
from fleet.wire.mqtt import BrokerAddress, BrokerConnectionError, PahoBroker, TlsFiles
from fleet.wire.mqtt_bulk import BulkSubscriber
from fleet.wire.topics import device_topic, device_wildcard
from fleet.wire.transport import Message
from hub.devices.broker_acl import device_user, hub_user, mosquitto_config, write_broker_auth
from hub.devices.embedded_broker import EmbeddedBroker
from hub.devices.pki import CertificateAuthority, IssuedCertificate, ServerTls
from tests.hub.devices.test_broker_acl import PASSWORDS
from tests.integration.private_mosquitto import MOSQUITTO, PrivateMosquitto

WAIT_S = 10.0


@dataclass
class Pki:
    ca: CertificateAuthority
    broker: IssuedCertificate
    clients: dict[str, IssuedCertificate]
    expired: IssuedCertificate
    foreign_ca: CertificateAuthority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create(root / "ca")
    clients = {name: ca.issue_client(root / "clients", name) for name in ("cam-a", "cam-b", HUB_USERNAME)}
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    return Pki(
        ca=ca,
        broker=ca.issue_server(root / "broker", ["127.0.0.1", "localhost"]),
        clients=clients,
        expired=ca.issue_client(root / "expired", "cam-a", days=30, valid_from=long_ago),
        foreign_ca=CertificateAuthority.create(root / "foreign"),
    )


@pytest.fixture(scope="module", params=["embedded", "mosquitto"])
def tls_broker(request: pytest.FixtureRequest, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A broker that accepts only TLS with a client certificate from the fleet CA."""
    tls = ServerTls(str(pki.broker.cert_file), str(pki.broker.key_file), str(pki.ca.cert_file), True)
    if request.param == "embedded":
        embedded = EmbeddedBroker(
            "127.0.0.1", check=lambda user, password, _address: PASSWORDS.get(user) == password, tls=tls
        )
        embedded.start()
        yield embedded.port
        embedded.stop()
        return
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    workdir = tmp_path_factory.mktemp("mosquitto-tls")
    users = [hub_user(PASSWORDS[HUB_USERNAME])] + [device_user(d, PASSWORDS[d]) for d in ("cam-a", "cam-b")]
    files = write_broker_auth(workdir / "auth", users, mode=0o600)
    mosquitto = PrivateMosquitto(workdir, listener=lambda port: mosquitto_config(files, port=port, tls=tls))
    mosquitto.start()
    yield mosquitto.port
    mosquitto.stop()


def _connect(port: int, login: str, cert: IssuedCertificate | None, *, ca: CertificateAuthority) -> PahoBroker:
    tls = TlsFiles(str(ca.cert_file), str(cert.cert_file) if cert else None, str(cert.key_file) if cert else None)
    address = BrokerAddress("127.0.0.1", port, login, PASSWORDS[login], tls)
    client_id = f"edgefleet-test-{uuid.uuid4().hex[:6]}" if login == HUB_USERNAME else login
    return PahoBroker(address, client_id=client_id, connect_timeout_s=WAIT_S)


class Inbox:
    """Messages one subscription received, with an event per awaited payload."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def wait_for(self, payload: bytes) -> list[Message]:
        with self._changed:
            assert self._changed.wait_for(lambda: any(m.payload == payload for m in self.messages), WAIT_S)
            return list(self.messages)


def test_device_traffic_flows_over_tls_with_client_certificates(tls_broker: int, pki: Pki) -> None:
    hub = _connect(tls_broker, HUB_USERNAME, pki.clients[HUB_USERNAME], ca=pki.ca)
    device = _connect(tls_broker, "cam-a", pki.clients["cam-a"], ca=pki.ca)
    try:
        inbox = Inbox()
        hub.subscribe(device_wildcard("state"), inbox)
        orders = Inbox()
        device.subscribe(device_topic("cam-a", "deployment"), orders)
        assert hub.wait_subscribed(WAIT_S) and device.wait_subscribed(WAIT_S)  # else a publish can overtake them
        token = uuid.uuid4().hex.encode()
        device.publish(device_topic("cam-a", "state"), b"state-" + token)
        inbox.wait_for(b"state-" + token)
        hub.publish(device_topic("cam-a", "deployment"), b"order-" + token)
        orders.wait_for(b"order-" + token)
    finally:
        device.close()
        hub.close()


def test_the_hub_telemetry_subscriber_reads_over_tls(tls_broker: int, pki: Pki) -> None:
    hub_cert = pki.clients[HUB_USERNAME]
    tls = TlsFiles(str(pki.ca.cert_file), str(hub_cert.cert_file), str(hub_cert.key_file))
    address = BrokerAddress("127.0.0.1", tls_broker, HUB_USERNAME, PASSWORDS[HUB_USERNAME], tls)
    subscriber = BulkSubscriber(address, client_id=f"edgefleet-test-{uuid.uuid4().hex[:6]}")
    inbox = Inbox()
    subscriber.subscribe_raw(device_wildcard("telemetry"), inbox)
    device = _connect(tls_broker, "cam-a", pki.clients["cam-a"], ca=pki.ca)
    try:
        token = uuid.uuid4().hex.encode()
        for i in range(50):
            device.publish(device_topic("cam-a", "telemetry"), b"%d-" % i + token)
        assert [m.payload for m in inbox.wait_for(b"49-" + token)] == [b"%d-" % i + token for i in range(50)]
    finally:
        device.close()
        subscriber.close()


def test_a_device_refuses_a_broker_signed_by_another_ca(tls_broker: int, pki: Pki) -> None:
    with pytest.raises(BrokerConnectionError, match="certificate is not trusted"):
        _connect(tls_broker, "cam-a", pki.clients["cam-a"], ca=pki.foreign_ca)


def test_an_expired_client_certificate_is_refused(tls_broker: int, pki: Pki) -> None:
    with pytest.raises(BrokerConnectionError):
        _connect(tls_broker, "cam-a", pki.expired, ca=pki.ca)


def test_a_device_without_a_client_certificate_is_refused(tls_broker: int, pki: Pki) -> None:
    with pytest.raises(BrokerConnectionError):
        _connect(tls_broker, "cam-a", None, ca=pki.ca)


def test_a_certificate_for_another_device_gives_no_access_as_the_login(tls_broker: int, pki: Pki) -> None:
    """cam-a logs in with cam-b's certificate: the embedded broker refuses the mismatch; Mosquitto takes the
    identity from the certificate (``use_identity_as_username``), so the client acts as cam-b and cannot
    write cam-a's topics."""
    hub = _connect(tls_broker, HUB_USERNAME, pki.clients[HUB_USERNAME], ca=pki.ca)
    try:
        inbox = Inbox()
        hub.subscribe(device_wildcard("state"), inbox)
        assert hub.wait_subscribed(WAIT_S)
        try:
            impostor = _connect(tls_broker, "cam-a", pki.clients["cam-b"], ca=pki.ca)
        except BrokerConnectionError:
            return  # refused outright
        try:
            token = uuid.uuid4().hex.encode()
            impostor.publish(device_topic("cam-a", "state"), b"forged-" + token)
            impostor.publish(device_topic("cam-b", "state"), b"marker-" + token)
            seen = inbox.wait_for(b"marker-" + token)  # delivered in order: the forged one would come first
            assert [m.topic for m in seen] == [device_topic("cam-b", "state")], seen
        finally:
            impostor.close()
    finally:
        hub.close()
