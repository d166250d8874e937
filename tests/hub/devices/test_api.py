"""Device lifecycle over REST on a started hub with its embedded broker: a kit, labels, a removal that cuts the
device off at once."""

from __future__ import annotations

import asyncio
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agent.config import AgentConfig
from hub.api import create_app
from hub.app import Hub
from hub.auth import Role
from hub.config import HubSettings
from hub.devices.mosquitto import BrokerAuthFiles, mosquitto_config
from hub.devices.provisioning import extract_device_kit
from hub.registry.access import AccessStore
from hub.registry.credentials import verify_password
from tests.hub.auth.clients import bearer_client, token_for
from tests.hub.devices.mqtt_client import WAIT_S, Client
from tests.integration.private_mosquitto import MOSQUITTO, PrivateMosquitto


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[Hub, TestClient]]:
    """A started hub and an operator's client of its REST API."""
    hub = Hub(HubSettings(data_dir=tmp_path / "hub", broker_auth_dir=tmp_path / "mosquitto"))
    hub.start()
    try:
        yield hub, bearer_client(create_app(hub), token_for(hub, Role.OPERATOR), raise_server_exceptions=False)
    finally:
        hub.stop()


def test_a_kit_holds_a_ready_agent_config_with_a_working_secret(
    started: tuple[Hub, TestClient], tmp_path: Path
) -> None:
    hub, client = started
    answer = client.post("/devices/kit", json={"device_id": "cam-1", "target": "x86-onnx-cpu", "labels": {"a": "b"}})
    assert answer.status_code == 201 and answer.headers["content-type"] == "application/gzip"
    config = AgentConfig.load(extract_device_kit(answer.content, tmp_path / "cam-1"))
    assert config.device_id == "cam-1" and config.broker_url == hub.broker_address.url
    assert stat.S_IMODE((tmp_path / "cam-1" / "device.secret").stat().st_mode) == 0o600
    assert config.trust_root.read_bytes() == hub.tuf.trusted_root()
    assert hub.registry.check_device_secret("cam-1", config.secret())
    assert "cam-1:" in (tmp_path / "mosquitto" / "passwd").read_text()  # Mosquitto's files follow the inventory
    assert client.post("/devices/kit", json={"device_id": "cam-1", "target": "x86-onnx-cpu"}).status_code == 409


def test_a_device_provisioned_without_a_kit_is_in_mosquittos_files_too(
    started: tuple[Hub, TestClient], tmp_path: Path
) -> None:
    _, client = started
    secret = client.post("/devices", json={"device_id": "cam-2", "target": "x86-onnx-cpu"}).json()["secret"]
    hashes = dict(line.split(":", 1) for line in (tmp_path / "mosquitto" / "passwd").read_text().split())
    assert verify_password(secret, hashes["cam-2"])


def test_a_kit_names_the_failover_nodes_of_a_clustered_broker(tmp_path: Path) -> None:
    nodes = ["mqtt://n2.example:1883", "mqtt://n3.example:1883"]
    settings = HubSettings(
        data_dir=tmp_path / "hub", device_broker_url="mqtt://n1.example:1883", device_broker_failover_urls=nodes
    )
    hub = Hub(settings)
    hub.start()
    try:
        client = bearer_client(create_app(hub), token_for(hub, Role.PROVISIONER))
        answer = client.post("/devices/kit", json={"device_id": "cam-9", "target": "x86-onnx-cpu"})
        config = AgentConfig.load(extract_device_kit(answer.content, tmp_path / "cam-9"))
        assert config.broker_nodes() == ["mqtt://n1.example:1883", *nodes]
    finally:
        hub.stop()


def test_a_provisioner_adds_devices_but_only_an_operator_relabels_or_removes(started: tuple[Hub, TestClient]) -> None:
    hub, operator = started
    provisioner = bearer_client(operator.app, token_for(hub, Role.PROVISIONER), raise_server_exceptions=False)
    viewer = bearer_client(operator.app, token_for(hub, Role.VIEWER), raise_server_exceptions=False)
    assert provisioner.post("/devices/kit", json={"device_id": "cam-9", "target": "x86-onnx-cpu"}).status_code == 201
    assert viewer.post("/devices/kit", json={"device_id": "cam-8", "target": "x86-onnx-cpu"}).status_code == 403
    assert provisioner.patch("/devices/cam-9/labels", json={"set": {"a": "b"}}).status_code == 403
    assert provisioner.delete("/devices/cam-9").status_code == 403
    assert bearer_client(operator.app, None).delete("/devices/cam-9").status_code == 401
    assert hub.registry.get_device("cam-9").labels == {}


def test_labels_are_set_and_removed(started: tuple[Hub, TestClient]) -> None:
    hub, client = started
    hub.registry.provision_device("cam-2", "x86-onnx-cpu", {"site": "north", "tier": "edge"})
    answer = client.patch("/devices/cam-2/labels", json={"set": {"site": "south"}, "remove": ["tier"]})
    assert answer.status_code == 200 and answer.json()["labels"] == {"site": "south"}
    assert "credential_hash" not in answer.json() and "broker_hash" not in answer.json()
    assert hub.registry.get_device("cam-2").labels == {"site": "south"}
    assert client.patch("/devices/ghost/labels", json={"set": {"a": "b"}}).status_code == 404


def test_a_removed_device_is_disconnected_and_cannot_log_in_again(
    started: tuple[Hub, TestClient], tmp_path: Path
) -> None:
    hub, client = started
    _, secret = hub.registry.provision_device("cam-3", "x86-onnx-cpu")
    assert hub.embedded is not None
    device = Client("cam-3", secret, hub.embedded.port).connect()
    assert client.delete("/devices/cam-3").status_code == 204
    assert device.disconnected.wait(WAIT_S), "the removed device kept its connection"
    device.close()
    again = Client("cam-3", secret, hub.embedded.port).start()
    assert again.refused.wait(WAIT_S)
    again.close()
    assert client.get("/devices/cam-3").status_code == 404
    assert client.delete("/devices/cam-3").status_code == 404
    assert "cam-3" not in (tmp_path / "mosquitto" / "passwd").read_text()


def test_a_renewed_secret_cuts_the_old_one_off_and_the_new_kit_logs_in(
    started: tuple[Hub, TestClient], tmp_path: Path
) -> None:
    """``POST /devices/{id}/secret`` (provisioner): the old secret's broker session is closed and it is refused by
    the embedded broker, by HTTP Basic (even just after a remembered success) and by Mosquitto's password file."""
    hub, operator = started
    assert hub.embedded is not None
    _, old = hub.registry.provision_device("cam-5", "x86-onnx-cpu")
    device = Client("cam-5", old, hub.embedded.port).connect()
    downloads = TestClient(operator.app)
    assert downloads.get(f"/bundles/{'0' * 64}", auth=("cam-5", old)).status_code == 404  # logged in, remembered
    provisioner = client_as(operator, hub, Role.PROVISIONER)

    answer = provisioner.post("/devices/cam-5/secret")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/gzip"
    config = AgentConfig.load(extract_device_kit(answer.content, tmp_path / "cam-5"))
    secret = config.secret()
    assert (
        secret is not None
        and config.device_id == "cam-5"
        and config.broker_url == hub.broker_address.url
        and secret != old
    )
    assert config.trust_root.read_bytes() == hub.tuf.trusted_root()
    assert device.disconnected.wait(WAIT_S), "the session opened with the old secret was kept"
    device.close()
    Client("cam-5", secret, hub.embedded.port).connect().close()
    refused = Client("cam-5", old, hub.embedded.port).start()
    assert refused.refused.wait(WAIT_S)
    refused.close()
    assert downloads.get(f"/bundles/{'0' * 64}", auth=("cam-5", old)).status_code == 401
    assert downloads.get(f"/bundles/{'0' * 64}", auth=("cam-5", secret)).status_code == 404
    hashes = dict(line.split(":", 1) for line in (tmp_path / "mosquitto" / "passwd").read_text().split())
    assert verify_password(secret, hashes["cam-5"]) and not verify_password(old, hashes["cam-5"])
    audited = AccessStore(hub.db).audit_entries(limit=1)[0]
    assert (audited.method, audited.route, audited.role, audited.status) == (
        "POST",
        "/devices/{device_id}/secret",
        "provisioner",
        200,
    )


def test_mosquitto_with_the_rewritten_files_takes_the_new_secret_only(
    started: tuple[Hub, TestClient], tmp_path: Path
) -> None:
    """A Mosquitto (re)started on the files the hub rewrote after a renewal logs the device in with its new
    secret and refuses the old one."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    _, operator = started
    kit = operator.post("/devices/kit", json={"device_id": "cam-8", "target": "x86-onnx-cpu"}).content
    old = AgentConfig.load(extract_device_kit(kit, tmp_path / "kit")).secret()  # the files now hold its hash
    assert old is not None
    secret = operator.post("/devices/cam-8/secret", params={"format": "json"}).json()["secret"]
    files = BrokerAuthFiles(tmp_path / "mosquitto" / "passwd", tmp_path / "mosquitto" / "acl")
    mosquitto = PrivateMosquitto(tmp_path, listener=lambda port: mosquitto_config(files, port=port))
    mosquitto.start()
    try:
        Client("cam-8", secret, mosquitto.port).connect().close()
        refused = Client("cam-8", old, mosquitto.port).start()
        assert refused.refused.wait(WAIT_S), "Mosquitto took the old secret"
        refused.close()
    finally:
        mosquitto.stop()


def test_a_renewed_secret_is_answered_as_json_when_asked(started: tuple[Hub, TestClient]) -> None:
    hub, operator = started
    hub.registry.provision_device("cam-6", "x86-onnx-cpu")
    answer = operator.post("/devices/cam-6/secret", params={"format": "json"})
    assert answer.status_code == 200
    body = answer.json()
    assert (body["device_id"], body["target"], body["trust_root"]) == (
        "cam-6",
        "x86-onnx-cpu",
        hub.tuf.trusted_root().decode(),
    )
    assert hub.registry.check_device_secret("cam-6", body["secret"])
    assert operator.post("/devices/cam-6/secret", params={"format": "yaml"}).status_code == 422


def test_only_a_provisioner_renews_a_secret_of_a_provisioned_device(started: tuple[Hub, TestClient]) -> None:
    hub, operator = started
    _, secret = hub.registry.provision_device("cam-7", "x86-onnx-cpu")
    assert client_as(operator, hub, Role.VIEWER).post("/devices/cam-7/secret").status_code == 403
    assert client_as(operator, hub, None).post("/devices/cam-7/secret").status_code == 401
    assert hub.registry.check_device_secret("cam-7", secret)  # refused calls changed nothing
    missing = operator.post("/devices/ghost/secret")
    assert missing.status_code == 404 and missing.json()["detail"] == "device ghost is not provisioned"


def test_a_device_sending_a_packet_as_it_is_removed_is_still_cut_off(started: tuple[Hub, TestClient]) -> None:
    """On Python 3.11 ``asyncio.wait_for`` drops a cancellation that arrives with the data it waited for: a device's
    packet (its PUBACK of the cleared order) read as it is removed must not keep the broker serving it."""
    hub, _ = started
    embedded = hub.embedded
    assert embedded is not None and embedded._broker is not None
    broker = embedded._broker
    _, secret = hub.registry.provision_device("cam-4", "x86-onnx-cpu")
    device = Client("cam-4", secret, embedded.port).connect()

    async def packet_then_removal() -> bool:
        _, handler = broker._sessions["cam-4"]
        handler.reader._reader.feed_data(b"\xc0\x00")  # a PINGREQ, read in the same turn as the cancellation
        return await embedded._disconnect("cam-4")

    assert asyncio.run_coroutine_threadsafe(packet_then_removal(), embedded._loop).result(WAIT_S)
    assert device.disconnected.wait(WAIT_S), "the removed device kept its connection"
    device.close()


@pytest.mark.parametrize("listen", ["127.0.0.1", "0.0.0.0"])  # every interface: the hub still connects by loopback
def test_with_a_fleet_ca_the_kit_connects_over_mutual_tls(tmp_path: Path, listen: str) -> None:
    from hub.devices.pki import CertificateAuthority

    ca = CertificateAuthority.create(tmp_path / "pki")
    server = ca.issue_server(tmp_path / "pki" / "broker", ["127.0.0.1", "localhost"])
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        broker_host=listen,
        embedded_tls_cert=server.cert_file,
        embedded_tls_key=server.key_file,
        embedded_client_ca=ca.cert_file,
        require_client_cert=True,
        broker_ca_file=ca.cert_file,
        device_ca_dir=tmp_path / "pki",
    )
    hub = Hub(settings)
    hub.start()
    try:
        client = bearer_client(create_app(hub), token_for(hub, Role.PROVISIONER))
        answer = client.post("/devices/kit", json={"device_id": "cam-7", "target": "x86-onnx-cpu"})
        config = AgentConfig.load(extract_device_kit(answer.content, tmp_path / "cam-7"))
        tls = config.broker_tls()
        assert config.broker_url.startswith("mqtts://") and tls is not None and tls.cert_file and tls.key_file
        assert stat.S_IMODE(Path(tls.key_file).stat().st_mode) == 0o600
        from fleet.wire.mqtt import BrokerAddress, PahoBroker

        address = BrokerAddress.from_url(config.broker_url, tls=tls)
        login = BrokerAddress(address.host, address.port, "cam-7", config.secret(), tls)
        connection = PahoBroker(login, client_id="cam-7")  # waits for the broker's answer; raises when refused
        connection.close()
    finally:
        hub.stop()


def test_nats_authorization_follows_the_inventory_with_one_hub_hash(tmp_path: Path) -> None:
    """With ``nats_auth_dir`` the hub rewrites NATS's include file (owner-only) when a device is provisioned or
    removed, as it does Mosquitto's files; the hub's own bcrypt hash is made once, not per rewrite."""
    hub = Hub(HubSettings(data_dir=tmp_path / "hub", nats_auth_dir=tmp_path / "nats"))
    hub.start()
    auth_file = tmp_path / "nats" / "nats-auth.conf"
    try:
        client = bearer_client(create_app(hub), token_for(hub, Role.OPERATOR))
        assert client.post("/devices/kit", json={"device_id": "cam-1", "target": "x86-onnx-cpu"}).status_code == 201
        first = auth_file.read_text()
        assert "CN=cam-1" in first and stat.S_IMODE(auth_file.stat().st_mode) == 0o600
        assert bcrypt_hashes(first) == {hub.nats_hub_hash, hub.registry.get_device("cam-1").nats_hash}
        assert client.post("/devices/kit", json={"device_id": "cam-2", "target": "x86-onnx-cpu"}).status_code == 201
        assert client.delete("/devices/cam-1").status_code == 204
        last = auth_file.read_text()
        assert "CN=cam-1" not in last and "CN=cam-2" in last
        assert hub.nats_hub_hash in last
    finally:
        hub.stop()


def test_a_device_without_a_nats_hash_gets_one_with_a_new_secret(tmp_path: Path) -> None:
    """A device provisioned before migration 0011 is left out of NATS's include file until its secret is renewed;
    then the file carries the bcrypt hash of the new secret."""
    import bcrypt

    from hub.registry.tables import Device

    hub = Hub(HubSettings(data_dir=tmp_path / "hub", nats_auth_dir=tmp_path / "nats"))
    hub.start()
    auth_file = tmp_path / "nats" / "nats-auth.conf"
    try:
        with hub.db.session() as session:
            session.add(Device(id="cam-old", target="x86-onnx-cpu", credential_hash="-", broker_hash=None))
        client = bearer_client(create_app(hub), token_for(hub, Role.PROVISIONER))
        assert client.post("/devices/kit", json={"device_id": "cam-1", "target": "x86-onnx-cpu"}).status_code == 201
        assert "CN=cam-old" not in auth_file.read_text()
        secret = client.post("/devices/cam-old/secret", params={"format": "json"}).json()["secret"]
        text = auth_file.read_text()
        device_hashes = bcrypt_hashes(text) - {hub.nats_hub_hash, hub.registry.get_device("cam-1").nats_hash}
        assert "CN=cam-old" in text and len(device_hashes) == 1
        assert bcrypt.checkpw(secret.encode(), device_hashes.pop().encode())
    finally:
        hub.stop()


def client_as(client: TestClient, hub: Hub, role: Role | None) -> TestClient:
    """A client of ``client``'s app with a fresh token of ``role`` (none when None)."""
    assert isinstance(client.app, FastAPI)
    token = token_for(hub, role) if role is not None else None
    return bearer_client(client.app, token, raise_server_exceptions=False)


def bcrypt_hashes(text: str) -> set[str]:
    """The bcrypt hashes an include file holds."""
    return set(re.findall(r"\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}", text))
