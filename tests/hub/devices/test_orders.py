"""Deployment orders are stamped with a per-device sequence that only rises: across sends, across devices
independently, when the clock goes back, and after the database was restored from an older backup."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import time_machine

from fleet.wire import topics
from fleet.wire.messages import DeploymentOrder, decode
from fleet.wire.transport import InMemoryBroker, Message
from hub.bundles.store import ArtifactStore
from hub.devices.orders import DeploymentOrders
from hub.errors import NotFoundError
from hub.registry import Database, Registry


def test_each_order_sent_carries_a_higher_sequence(database_url: str, tmp_path: Path) -> None:
    registry = Registry(Database(database_url))
    for name in ("cam-a", "cam-b"):
        registry.provision_device(name, "rpi4-arm64")
    store = ArtifactStore(tmp_path / "artifacts")
    sha = store.put_bytes(b"bundle" * 100)
    broker = InMemoryBroker()
    received: list[DeploymentOrder] = []
    broker.subscribe(topics.device_wildcard("deployment"), lambda m: received.append(_order(m)))
    orders = DeploymentOrders(broker, store, registry, chunk_size=1024)
    template = orders.order_for("dep-1", sha, model="m", version="1.0.0", target="rpi4-arm64", tuf_target="t")
    assert template.sequence == 0  # only sending stamps it
    with time_machine.travel(dt.datetime(2027, 6, 1, tzinfo=dt.UTC), tick=False):
        orders.send("cam-a", template)
        orders.send("cam-a", template)
        orders.send("cam-b", template)
    with time_machine.travel(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), tick=False):  # the clock went back
        orders.send("cam-a", template)
    a = [o.sequence for o in received[:2]] + [received[3].sequence]
    assert (
        a == sorted(a) and len(set(a)) == 3 and a[0] >= int(dt.datetime(2027, 6, 1, tzinfo=dt.UTC).timestamp() * 1000)
    )
    assert received[2].sequence >= a[0]  # cam-b's own series
    registry.db.close()


def test_a_wave_is_sent_at_once_and_a_removed_device_is_named(database_url: str, tmp_path: Path) -> None:
    registry = Registry(Database(database_url))
    for name in ("cam-a", "cam-b"):
        registry.provision_device(name, "rpi4-arm64")
    store = ArtifactStore(tmp_path / "artifacts")
    sha = store.put_bytes(b"bundle" * 100)
    broker = InMemoryBroker()
    received: dict[str, DeploymentOrder] = {}
    broker.subscribe(
        topics.device_wildcard("deployment"),
        lambda m: received.__setitem__(topics.parse_device_topic(m.topic)[0], _order(m)),
    )
    orders = DeploymentOrders(broker, store, registry, chunk_size=1024)
    template = orders.order_for("dep-1", sha, model="m", version="1.0.0", target="rpi4-arm64", tuf_target="t")
    with pytest.raises(NotFoundError, match="cam-gone"):
        orders.send_all(dict.fromkeys(["cam-a", "cam-gone", "cam-b"], template))
    assert sorted(received) == ["cam-a", "cam-b"] and all(o.sequence > 0 for o in received.values())
    registry.db.close()


def test_sequences_keep_rising_after_a_restore_from_an_old_backup(database_url: str) -> None:
    registry = Registry(Database(database_url))
    registry.provision_device("cam-a", "rpi4-arm64")
    with time_machine.travel(dt.datetime(2027, 1, 1, tzinfo=dt.UTC), tick=False):
        before_backup = registry.next_order_sequence("cam-a")
    with time_machine.travel(dt.datetime(2027, 3, 1, tzinfo=dt.UTC), tick=False):
        registry.next_order_sequence("cam-a")  # sent after the backup, lost with the restore
    with registry.db.session() as session:  # the restore: the counter goes back to its backup value
        from hub.registry import Device

        device = session.get(Device, "cam-a")
        assert device is not None
        device.order_sequence = before_backup
        session.add(device)
    with time_machine.travel(dt.datetime(2027, 3, 2, tzinfo=dt.UTC), tick=False):
        assert registry.next_order_sequence("cam-a") > int(dt.datetime(2027, 3, 1, tzinfo=dt.UTC).timestamp() * 1000)
    registry.db.close()


def _order(message: Message) -> DeploymentOrder:
    return decode(DeploymentOrder, message.payload)
