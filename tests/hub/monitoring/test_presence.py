"""Online status rebuilt from live traffic (hub/monitoring/presence.py), on SQLite and PostgreSQL, the clock
moved with time-machine: silent devices go offline, heartbeats keep devices online, a will is never undone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import time_machine

from fleet.wire.messages import DeviceState, Heartbeat
from hub.monitoring.presence import DevicePresence
from hub.registry import Database, Registry

T0 = 1_900_000_000.0


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    db = Database(database_url)
    registry = Registry(db)
    for device in ("alive", "dead", "gone"):  # provisioning hashes a secret: keep it to a few
        registry.provision_device(device, "x86-onnx-cpu")
    yield registry
    db.close()


def _online(registry: Registry) -> dict[str, bool]:
    return {d.id: d.online for d in registry.list_devices()}


def _beat(device_id: str) -> Heartbeat:
    return Heartbeat(device_id=device_id, ts=0.0, uptime_s=1.0, requests_total=0)


def test_devices_not_heard_from_go_offline_and_heartbeats_keep_them_online(registry: Registry) -> None:
    presence = DevicePresence(registry, offline_after_s=90)
    with time_machine.travel(T0, tick=False) as clock:
        for device in ("alive", "dead"):
            registry.apply_device_state(DeviceState(device_id=device, online=True))
        for _ in range(4):  # heartbeats every 30 s from one device only
            clock.shift(30)
            presence.heard(_beat("alive"))
            presence.sweep()
        assert _online(registry) == {"alive": True, "dead": False, "gone": False}
        assert registry.get_device("alive").last_seen == T0 + 120


def test_a_stale_online_row_is_corrected_by_the_first_sweep_at_start(registry: Registry) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        registry.apply_device_state(DeviceState(device_id="dead", online=True))  # its agent died with the hub down
        clock.shift(3600)
        restarted = DevicePresence(registry, offline_after_s=90)
        assert restarted.sweep() == ["dead"]
        assert not registry.get_device("dead").online


def test_a_late_heartbeat_never_undoes_a_newer_offline_state(registry: Registry) -> None:
    presence = DevicePresence(registry, offline_after_s=90)
    with time_machine.travel(T0, tick=False) as clock:
        registry.apply_device_state(DeviceState(device_id="gone", online=True))
        clock.shift(5)
        presence.heard(_beat("gone"))  # noted, written at the next sweep
        clock.shift(1)
        registry.apply_device_state(DeviceState(device_id="gone", online=False))  # its last will
        presence.sweep()
        assert not registry.get_device("gone").online
        clock.shift(30)
        presence.heard(_beat("gone"))  # it is back and beating: online again
        presence.sweep()
        assert registry.get_device("gone").online


def test_a_sweep_writes_each_devices_own_time_in_one_statement(registry: Registry) -> None:
    with time_machine.travel(T0, tick=False):
        registry.apply_device_state(DeviceState(device_id="gone", online=False))  # last seen now: T0
    registry.record_heard({"alive": T0 + 10, "dead": T0 + 20, "gone": T0 - 5})  # gone's beat is older than its will
    seen = {d.id: (d.online, d.last_seen) for d in registry.list_devices()}
    assert seen == {"alive": (True, T0 + 10), "dead": (True, T0 + 20), "gone": (False, T0)}
