"""The NATS auth file `edgefleet broker auth-files --broker nats` writes (hub/devices/nats_auth.py), on a real
nats-server with the MQTT listener it prints (TLS, ``verify_and_map``): a device logs in with its certificate alone,
gets its own order and reports its own state but not another device's; a certificate of an unprovisioned device, no
certificate, or a device user on the NATS client port is refused; the hub logs in with its certificate on MQTT and
with its password on the NATS port, where it takes device traffic in a queue group (share_nats_url)."""

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

import paho.mqtt.client as mqtt
import pytest

from fleet.wire.acl import HUB_USERNAME
from fleet.wire.transport import Message
from hub.devices.nats_auth import nats_config, render_nats_authorization, write_nats_auth
from hub.devices.nats_queue import NatsQueueGroups
from hub.devices.pki import CertificateAuthority, ServerTls
from tests.integration.nats_cluster import NATS_SERVER, _free_ports
from tests.waiting import wait_until

WAIT_S = 10.0
HUB_SECRET = "hub-secret"


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
    for name in ("cam-1", "cam-9", HUB_USERNAME):  # cam-9 has a certificate but is not provisioned
        ca.issue_client(pki / name, name)
    auth = write_nats_auth(root / "auth", render_nats_authorization(["cam-1", "cam-2"], HUB_SECRET, rounds=4))
    nats_port, monitor_port, mqtt_port = _free_ports(3)
    tls = ServerTls(str(broker.cert_file), str(broker.key_file), str(ca.cert_file), True)
    config = root / "nats.conf"
    config.write_text(
        f"server_name: auth0\nlisten: 127.0.0.1:{nats_port}\nhttp: 127.0.0.1:{monitor_port}\n"
        f'jetstream {{ store_dir: "{root / "js"}" }}\n'
        + nats_config(auth, config_dir=root, port=mqtt_port, host="127.0.0.1", tls=tls, replicas=1)
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


class Client:
    """A paho client over TLS with ``name``'s certificate (none: no certificate)."""

    def __init__(self, node: Node, name: str | None, *, client_id: str | None = None) -> None:
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subacks: queue.Queue[bool] = queue.Queue()
        self.connack: queue.Queue[bool] = queue.Queue()
        self.paho = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"{name}-test"
        )
        context = ssl.create_default_context(cafile=str(node.pki / "ca.crt"))
        if name is not None:
            context.load_cert_chain(node.pki / name / f"{name}.crt", node.pki / name / f"{name}.key")
        self.paho.tls_set_context(context)
        self.paho.on_connect = lambda _c, _u, _f, code, _p: self.connack.put(not code.is_failure)
        self.paho.on_message = lambda _c, _u, m: self.received.put((m.topic, m.payload))
        self.paho.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(not codes[0].is_failure)
        self.paho.on_disconnect = lambda *_: self.connack.put(False)  # closed before or instead of a CONNACK
        self.error: Exception | None = None
        try:
            self.paho.connect("127.0.0.1", node.mqtt_port)
        except (OSError, ssl.SSLError) as exc:  # the TLS handshake itself refused
            self.error = exc
            return
        self.paho.loop_start()

    def accepted(self) -> bool:
        """Whether the broker accepted the session (False: refused in CONNACK, TLS or by closing)."""
        if self.error is not None:
            return False
        try:
            return self.connack.get(timeout=WAIT_S)
        except queue.Empty:
            return False

    def subscribe(self, topic: str) -> bool:
        self.paho.subscribe(topic, qos=1)
        return self.subacks.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.paho.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def next(self) -> tuple[str, bytes]:
        return self.received.get(timeout=WAIT_S)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


def test_a_device_logs_in_with_its_certificate_and_reaches_its_own_topics_only(node: Node) -> None:
    hub, device = Client(node, HUB_USERNAME), Client(node, "cam-1")
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


@pytest.mark.parametrize("name", ["cam-9", None], ids=["unprovisioned-certificate", "no-certificate"])
def test_a_certificate_of_no_provisioned_device_or_none_is_refused(node: Node, name: str | None) -> None:
    client = Client(node, name, client_id="intruder")
    try:
        assert not client.accepted()
    finally:
        client.close()


def test_the_hub_takes_device_traffic_on_the_nats_port_with_its_password(node: Node) -> None:
    hub_mqtt = Client(node, HUB_USERNAME)
    device = Client(node, "cam-1")
    received: queue.Queue[Message] = queue.Queue()
    shared = None
    try:
        assert hub_mqtt.accepted() and device.accepted()
        url = f"nats://{HUB_USERNAME}:{HUB_SECRET}@127.0.0.1:{node.nats_port}"
        shared = NatsQueueGroups(_Unused(), [url], name="hub-test", connect_timeout_s=WAIT_S)
        shared.subscribe("$share/edgefleet-hub/edgefleet/v1/devices/+/telemetry", received.put)
        device.publish("edgefleet/v1/devices/cam-1/telemetry", b"batch")
        message = received.get(timeout=WAIT_S)
        assert (message.topic, message.payload) == ("edgefleet/v1/devices/cam-1/telemetry", b"batch")
    finally:
        if shared is not None:
            shared.close()
        hub_mqtt.close()
        device.close()
    assert not _nats_login(node.nats_port, "CN=cam-1", "")  # certificate users are MQTT-only
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


class _Unused:
    """The MQTT side of `NatsQueueGroups`, which these tests never reach."""

    def publish(self, *_: object, **__: object) -> None:
        raise AssertionError("not used")

    def subscribe(self, *_: object, **__: object) -> None:
        raise AssertionError("not used")

    def close(self) -> None:
        pass
