"""`KnownDevices`: the registry's answers on who is provisioned, remembered for a while and forgotten on removal,
so a decommissioned device stops counting without a database query per message."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from fleet.wire import topics
from fleet.wire.messages import DeviceState, encode
from fleet.wire.transport import InMemoryBroker
from hub.devices import known_devices
from hub.devices.known_devices import KnownDevices
from hub.devices.traffic import DeviceTraffic
from hub.registry import Database, Device, Registry


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


def test_a_fleet_whose_answers_expire_together_is_asked_again_in_a_few_queries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(known_devices, "_QUERY_IDS", 50)
    db = Database(f"sqlite:///{tmp_path / 'fleet.db'}")
    registry = CountingRegistry(db)
    fleet = [f"cam-{n:03d}" for n in range(120)]
    with db.session() as session:  # rows only: credentials do not matter here, and hashing 120 costs seconds
        session.add_all(Device(id=d, target="x86-onnx-cpu", credential_hash="-", broker_hash="-") for d in fleet)
    clock = Clock()
    known = KnownDevices(registry, ttl_s=60.0, clock=clock)
    for device_id in fleet:  # the fleet connects: one query per device, as nothing is remembered yet
        assert known.is_provisioned(device_id)
    connected = registry.queries
    registry.remove_device("cam-099")

    clock.now += 61.0  # every answer has expired together
    assert known.is_provisioned("cam-000")
    assert registry.queries == connected + 3  # the whole fleet, in queries of 50
    for device_id in fleet[1:99]:  # 20 devices fell silent
        assert known.is_provisioned(device_id)
    assert registry.queries == connected + 3
    assert not known.is_provisioned("cam-099")  # the removal was seen by the bulk query
    assert registry.queries == connected + 3

    clock.now += 61.0  # two periods since the silent ones were heard from: their answers are dropped
    assert known.is_provisioned("cam-000")
    assert registry.queries == connected + 5  # the 100 heard from lately
    assert known.remembered() == 100
    db.close()


def test_a_flood_of_unknown_ids_costs_one_small_query_each(registry: CountingRegistry) -> None:
    clock = Clock()
    known = KnownDevices(registry, ttl_s=60.0, clock=clock)
    assert known.provisioned(["cam-1", "cam-2"]) == {"cam-1", "cam-2"}
    clock.now += 59.0  # both answers are about to expire, and a flood of new ids arrives
    asked: list[int] = []
    original = registry.existing_devices

    def record(device_ids: Iterable[str]) -> set[str]:
        ids = list(device_ids)
        asked.append(len(ids))
        return original(ids)

    registry.existing_devices = record  # type: ignore[method-assign]
    for n in range(50):
        assert not known.is_provisioned(f"ghost-{n}")
    assert asked[0] == 3  # the first ghost, with the two answers due soon
    assert asked[1:] == [1] * 49  # then one id each: the due answers are not scanned again per message
