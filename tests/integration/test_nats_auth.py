"""The NATS auth file `edgefleet broker auth-files --broker nats` writes (hub/devices/nats_auth.py), on a real
nats-server with the MQTT listener it prints (TLS, ``verify_and_map``): a device logs in as the agent does (its
certificate, its id and secret), gets its own order and reports its own state but not another device's; a
certificate of an unprovisioned device, a device left out for want of a hash, a wrong secret, no certificate, or a
device user on the NATS client port is refused; the hub logs in with its own connections, its certificate on MQTT and
its password on the NATS port, where it takes device traffic in a queue group (share_nats_url)."""

from __future__ import annotations

import asyncio
import os
import queue
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.wire.acl import HUB_USERNAME
from fleet.wire.mqtt import BrokerAddress, PahoBroker, TlsFiles, Will
from fleet.wire.topics import device_topic
from fleet.wire.transport import Message
from hub.devices.connection import BrokerConnector
from hub.devices.nats_auth import render_nats_authorization
from hub.devices.nats_config import nats_config, write_nats_auth
from hub.devices.nats_queue import NatsQueueGroups
from hub.devices.pki import CertificateAuthority, ServerTls
from hub.registry.credentials import hash_bcrypt
from tests.integration.nats_cluster import NATS_SERVER, _free_ports
from tests.integration.probe_client import ProbeClient
from tests.waiting import wait_until

WAIT_S = 10.0
HUB_SECRET = "hub-secret"
SECRETS = {"cam-1": "cam-1-secret", "cam-2": "cam-2-secret", "cam-old": "cam-old-secret", "cam-9": "cam-9-secret"}


@dataclass
class Node:
    mqtt_port: int
    nats_port: int
    pki: Path
    log: Path


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip("nats-server is not installed (.ci/run installs the Debian package nats-server)")
    root = tmp_path_factory.mktemp("nats-auth")
    pki = root / "pki"
    ca = CertificateAuthority.create(pki)
    broker = ca.issue_server(pki / "broker", hosts=["127.0.0.1"])
    for name in ("cam-1", "cam-old", "cam-9", HUB_USERNAME):  # cam-9 has a certificate but is not provisioned
        ca.issue_client(pki / name, name)
    inventory = {"cam-1": hash_bcrypt(SECRETS["cam-1"]), "cam-2": hash_bcrypt(SECRETS["cam-2"]), "cam-old": None}
    auth = render_nats_authorization(inventory, HUB_SECRET, hub_rounds=4)
    assert auth.left_out == ("cam-old",)  # provisioned before the hashes were stored
    auth_file = write_nats_auth(root / "auth", auth.text)
    nats_port, monitor_port, mqtt_port = _free_ports(3)
    tls = ServerTls(str(broker.cert_file), str(broker.key_file), str(ca.cert_file), True)
    config = root / "nats.conf"
    config.write_text(
        f"server_name: auth0\nlisten: 127.0.0.1:{nats_port}\nhttp: 127.0.0.1:{monitor_port}\n"
        f'jetstream {{ store_dir: "{root / "js"}" }}\n'
        + nats_config(auth_file, config_dir=root, port=mqtt_port, host="127.0.0.1", tls=tls, replicas=1)
    )
    log = root / "nats.log"
    with log.open("ab") as out:
        process = subprocess.Popen([NATS_SERVER, "-c", str(config)], stdout=out, stderr=out)
    try:
        if not wait_until(lambda: process.poll() is not None or _healthy(monitor_port), WAIT_S) or process.poll():
            pytest.fail(f"nats-server did not start: {log.read_text()[-2000:]}")
        yield Node(mqtt_port, nats_port, pki, log)
    finally:
        process.kill()
        process.wait()


def _client(
    node: Node, cert: str | None, user: str | None = None, password: str | None = None, *, client_id: str
) -> ProbeClient:
    """A client over TLS with ``cert``'s certificate (None: none), logging in as ``user`` with ``password`` (the
    agent sends its id and secret, the hub its username and secret)."""
    context = ssl.create_default_context(cafile=str(node.pki / "ca.crt"))
    if cert is not None:
        context.load_cert_chain(node.pki / cert / f"{cert}.crt", node.pki / cert / f"{cert}.key")
    return ProbeClient(node.mqtt_port, client_id=client_id, user=user, password=password, tls=context)


def _device(node: Node, device_id: str = "cam-1") -> ProbeClient:
    """A device logging in as the agent does: its certificate, its id and its secret, its id as client id."""
    return _client(node, device_id, device_id, SECRETS[device_id], client_id=device_id)


def test_a_device_logs_in_with_its_certificate_and_reaches_its_own_topics_only(node: Node) -> None:
    hub = _client(node, HUB_USERNAME, HUB_USERNAME, HUB_SECRET, client_id="edgefleet-hub-test")
    device = _device(node)
    try:
        assert hub.accepted() and device.accepted()
        assert hub.subscribe("edgefleet/v1/devices/+/state")
        hub.publish("edgefleet/v1/devices/cam-1/deployment", b"order for cam-1", retain=True)
        assert device.subscribe("edgefleet/v1/devices/cam-1/deployment")
        assert device.next() == ("edgefleet/v1/devices/cam-1/deployment", b"order for cam-1")

        device.publish("edgefleet/v1/devices/cam-2/state", b"spoofed")  # refused by the server
        device.publish("edgefleet/v1/devices/cam-1/state", b"its own state")
        assert hub.next() == ("edgefleet/v1/devices/cam-1/state", b"its own state")
        assert hub.received.empty()
    finally:
        hub.close()
        device.close()


@pytest.mark.parametrize(
    ("cert", "user", "password"),
    [
        ("cam-9", "cam-9", SECRETS["cam-9"]),
        ("cam-old", "cam-old", SECRETS["cam-old"]),
        ("cam-1", "cam-1", SECRETS["cam-2"]),
        (None, "cam-1", SECRETS["cam-1"]),
        (None, None, None),
    ],
    ids=["unprovisioned", "left-out-without-hash", "wrong-secret", "no-certificate", "no-credentials"],
)
def test_a_login_without_a_provisioned_certificate_and_its_secret_is_refused(
    node: Node, cert: str | None, user: str | None, password: str | None
) -> None:
    client = _client(node, cert, user, password, client_id="intruder")
    try:
        assert not client.accepted()
    finally:
        client.close()


def test_the_hub_and_an_agent_log_in_as_they_do_in_production(node: Node) -> None:
    """The hub's own connections, MQTT from `BrokerConnector` (its certificate, its username, which
    ``verify_and_map`` ignores, and its secret, which NATS checks) and the NATS queue groups of ``share_nats_url``;
    a device connected the way the agent connects (`PahoBroker`, id and secret, certificate, a last will)."""
    key = node.pki / HUB_USERNAME / HUB_USERNAME
    tls = TlsFiles(str(node.pki / "ca.crt"), f"{key}.crt", f"{key}.key")
    hub_mqtt = BrokerConnector.from_url(f"mqtts://127.0.0.1:{node.mqtt_port}", hub_secret=HUB_SECRET, tls=tls).connect(
        "hub"
    )
    url = f"nats://{HUB_USERNAME}:{HUB_SECRET}@127.0.0.1:{node.nats_port}"
    shared = NatsQueueGroups(hub_mqtt, [url], name="hub-test", connect_timeout_s=WAIT_S)
    device_key = node.pki / "cam-1" / "cam-1"
    device_tls = TlsFiles(str(node.pki / "ca.crt"), f"{device_key}.crt", f"{device_key}.key")
    agent_address = BrokerAddress("127.0.0.1", node.mqtt_port, tls=device_tls).with_credentials(
        "cam-1", SECRETS["cam-1"]
    )
    will = Will(device_topic("cam-1", "state"), b"offline")
    states: queue.Queue[Message] = queue.Queue()
    telemetry: queue.Queue[Message] = queue.Queue()
    orders: queue.Queue[Message] = queue.Queue()
    device = None
    try:
        shared.subscribe("edgefleet/v1/devices/+/state", states.put)  # MQTT
        shared.subscribe("$share/edgefleet-hub/edgefleet/v1/devices/+/telemetry", telemetry.put)  # NATS queue group
        assert hub_mqtt.wait_subscribed(WAIT_S)
        assert hub_mqtt.publish_and_wait(device_topic("cam-1", "deployment"), b"the hub's order", retain=True)
        device = PahoBroker(agent_address, client_id="cam-1", will=will)
        device.subscribe(device_topic("cam-1", "deployment"), orders.put)
        assert device.wait_subscribed(WAIT_S)
        assert orders.get(timeout=WAIT_S).payload == b"the hub's order"
        device.publish(device_topic("cam-1", "telemetry"), b"batch")
        device.publish(device_topic("cam-1", "state"), b"state")
        for received, channel, payload in ((telemetry, "telemetry", b"batch"), (states, "state", b"state")):
            message = received.get(timeout=WAIT_S)
            assert (message.topic, message.payload) == (device_topic("cam-1", channel), payload)
    finally:
        if device is not None:
            device.close()
        shared.close()
        hub_mqtt.close()
    assert not _nats_login(node.nats_port, "CN=cam-1", SECRETS["cam-1"])  # device users are MQTT-only
    assert not _nats_login(node.nats_port, HUB_USERNAME, "wrong")


def _nats_login(port: int, user: str, password: str) -> bool:
    """Whether a NATS client logs in as ``user`` (one attempt, no reconnecting)."""
    import nats
    from nats.errors import Error as NatsError

    async def attempt() -> bool:
        async def quiet(_: Exception) -> None:
            pass

        try:
            client = await nats.connect(
                f"nats://127.0.0.1:{port}", user=user, password=password, allow_reconnect=False,
                max_reconnect_attempts=0, connect_timeout=WAIT_S, error_cb=quiet,
            )  # fmt: skip
        except (NatsError, OSError, TimeoutError):
            return False
        await client.close()
        return True

    return asyncio.run(attempt())
