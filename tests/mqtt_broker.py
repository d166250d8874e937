"""A real broker for tests that play the hub and devices themselves: the embedded broker as the hub runs it (logins
checked, topic ACLs enforced), or the machine's Mosquitto (anonymous: any login is let in)."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from fleet.wire.acl import HUB_USERNAME
from fleet.wire.messages import DeploymentOrder
from fleet.wire.mqtt import BrokerAddress, PahoBroker
from hub.devices.embedded_broker import EmbeddedBroker

HUB_PASSWORD = "hub-secret"
DEVICE_PASSWORD = "devsim"  # `bench.devsim.device.SimDevice`'s default
WAIT_S = 30.0


def _check(user: str, password: str, _address: str) -> bool:
    return password == (HUB_PASSWORD if user == HUB_USERNAME else DEVICE_PASSWORD)


@contextmanager
def running_broker(broker_url: str | None) -> Iterator[BrokerAddress]:
    """The address (without credentials) of the broker ``broker_url`` names, or of a fresh embedded one for None."""
    if broker_url is not None:
        yield BrokerAddress.from_url(broker_url)
        return
    embedded = EmbeddedBroker("127.0.0.1", check=_check)
    embedded.start()
    try:
        yield BrokerAddress("127.0.0.1", embedded.port)
    finally:
        embedded.stop()


def hub_client(address: BrokerAddress) -> PahoBroker:
    """A connection logged in as the hub (read and write on the whole protocol tree)."""
    hub = address.with_credentials(HUB_USERNAME, HUB_PASSWORD)
    return PahoBroker(hub, client_id=f"edgefleet-test-{uuid.uuid4().hex[:8]}")


def device_client(address: BrokerAddress, device_id: str) -> PahoBroker:
    """A connection logged in as device ``device_id`` (its client id is its login, as the broker demands)."""
    return PahoBroker(address.with_credentials(device_id, DEVICE_PASSWORD), client_id=device_id)


def unique_device_id() -> str:
    """A device id no earlier run used (Mosquitto is shared and keeps retained state across runs)."""
    return f"test-{uuid.uuid4().hex[:10]}"


def clear_retained(client: PahoBroker, topics: Iterable[str]) -> None:
    """Remove the retained messages of ``topics`` (an empty retained payload), waiting for each acknowledgement."""
    for topic in topics:
        assert client.publish_and_wait(topic, b"", retain=True, timeout_s=WAIT_S)


def retained_order(data: bytes, chunk_size: int) -> DeploymentOrder:
    """An order for bundle ``data`` whose chunks the hub keeps retained."""
    return DeploymentOrder(
        deployment_id="dep-retained",
        model="m",
        version="1.0.0",
        target="x86-onnx-cpu",
        tuf_target="bundles/m/1.0.0/x86-onnx-cpu.zip",
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        chunk_size=chunk_size,
        chunk_count=math.ceil(len(data) / chunk_size),
        retained_chunks=True,
    )
