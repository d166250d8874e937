"""`KnownDevices`: the registry's answers on who is provisioned, remembered for a while and forgotten on removal,
so a decommissioned device stops counting without a database query per message."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from fleet.wire import topics
from fleet.wire.messages import DeviceState, encode
from fleet.wire.transport import InMemoryBroker
from hub.devices.known_devices import KnownDevices
from hub.devices.traffic import DeviceTraffic
from hub.registry import Database, Registry


class CountingRegistry(Registry):
    """The real registry, counting the provisioning queries it answers."""

    queries = 0

    def existing_devices(self, device_ids: Iterable[str]) -> set[str]:
        self.queries += 1
        return super().existing_devices(device_ids)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[CountingRegistry]:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    registry = CountingRegistry(db)
    registry.provision_device("cam-1", "x86-onnx-cpu")
    registry.provision_device("cam-2", "x86-onnx-cpu")
    yield registry
    db.close()


def test_answers_are_remembered_for_their_period_then_asked_again(registry: CountingRegistry) -> None:
    clock = Clock()
    known = KnownDevices(registry, ttl_s=60.0, unknown_ttl_s=10.0, clock=clock)
    assert known.provisioned(["cam-1", "cam-2", "ghost"]) == {"cam-1", "cam-2"}
    assert registry.queries == 1  # one query for all three
    for _ in range(100):  # a flood, including from an unprovisioned id, costs nothing more
        assert known.provisioned(["cam-1", "ghost"]) == {"cam-1"}
    assert registry.queries == 1

    registry.remove_device("cam-2")  # removed through another replica: this one does not know yet
    clock.now += 11.0  # the unknown id's answer expired, the provisioned ones not yet
    assert known.provisioned(["cam-2", "ghost"]) == {"cam-2"}
    assert registry.queries == 2
    clock.now += 50.0  # a minute after the first answer: cam-2 is asked again and is gone
    assert known.provisioned(["cam-2"]) == set()
    assert registry.queries == 3


def test_a_device_removed_here_is_refused_at_once(registry: CountingRegistry) -> None:
    broker = InMemoryBroker()
    known = KnownDevices(registry, clock=Clock())
    traffic = DeviceTraffic(broker, registry, known=known)
    states: list[str] = []
    traffic.on_state(lambda state: states.append(state.device_id))
    traffic.start(channels=("state",))

    def send() -> None:
        broker.publish(topics.device_topic("cam-1", "state"), encode(DeviceState(device_id="cam-1", online=True)))

    send()
    registry.remove_device("cam-1")
    known.forget("cam-1")  # as DELETE /devices/{id} does
    send()
    assert states == ["cam-1"]
    assert traffic.rejected["state"] == 1
