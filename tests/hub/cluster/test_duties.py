"""`FencedOrders` refuses to send once its replica no longer leads; `LeaderDuties` hands the manager over."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from fleet.wire import topics
from fleet.wire.messages import DeploymentOrder, DeviceState, UpdateEvent, UpdateState, encode
from fleet.wire.transport import InMemoryBroker
from hub.bundles.refresh import MetadataRefresher
from hub.cluster import AlwaysLeader, FencedError, FencedOrders, LeaderDuties
from hub.devices.traffic import DeviceTraffic
from hub.registry import Database, Device, Registry
from hub.registry.rollouts import RolloutStore
from hub.rollouts.manager import RolloutManager


class Orders:
    """An order sink that keeps what it was asked to do."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def order_for(self, deployment_id: str, bundle_sha256: str, **_: object) -> DeploymentOrder:
        raise NotImplementedError

    def send_all(self, orders: Mapping[str, DeploymentOrder]) -> None:
        self.sent.extend(orders)

    def clear(self, device_id: str) -> None:
        self.sent.append(f"clear {device_id}")


class NothingDue:
    """A TUF repository with nothing to re-sign."""

    def refresh(self) -> list[str]:
        return []


def test_a_deposed_replica_sends_no_order() -> None:
    leadership, orders = AlwaysLeader(), Orders()
    fenced = FencedOrders(orders, leadership)
    leadership.start(lambda _epoch: None, lambda: None)
    fenced.clear("cam-1")
    leadership.stop()
    with pytest.raises(FencedError, match="not the leader: no order for cam-2"):
        fenced.clear("cam-2")
    assert orders.sent == ["clear cam-1"]


def test_the_manager_runs_only_while_leading(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    registry, leadership = Registry(db), AlwaysLeader()
    seen: list[RolloutManager | None] = []
    refresher = MetadataRefresher(NothingDue, interval_s=3600)  # type: ignore[arg-type]
    duties = LeaderDuties(
        registry,
        Orders(),
        refresher,
        leadership,
        feed=DeviceTraffic(InMemoryBroker(), registry),
        own_feed=False,
        on_manager=seen.append,
    )
    leadership.start(duties.lead, duties.step_down)
    assert duties.manager is not None and seen == [duties.manager]
    leadership.stop()
    assert duties.manager is None and seen[-1] is None
    db.close()


class CountingReports(Registry):
    """The real registry, counting the transactions that record device reports."""

    writes = 0

    def record_device_reports(self, states: list[DeviceState], events: list[UpdateEvent]) -> tuple[list[str], int]:
        self.writes += 1
        return super().record_device_reports(states, events)


def test_a_replica_leader_records_retained_done_states_once_off_its_feed(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    registry, leadership, broker = CountingReports(db), AlwaysLeader(), InMemoryBroker()
    with db.session() as session:
        session.add_all(Device(id=d, target="x86-onnx-cpu", credential_hash="-", broker_hash="-") for d in ("a", "b"))
    RolloutStore(db).mirror_deployment("r1", "m", "2", {"a": None, "b": None}, status="running")
    duties = LeaderDuties(
        registry,
        Orders(),
        MetadataRefresher(NothingDue, interval_s=3600),  # type: ignore[arg-type]
        leadership,
        feed=DeviceTraffic(broker, registry),
        own_feed=True,
    )
    leadership.start(duties.lead, duties.step_down)
    for _ in range(3):  # a done state heard again (reconnects, heartbeats of state) is one write, not three
        for device_id in ("a", "b"):
            state = DeviceState(device_id=device_id, online=True, update_state=UpdateState.DONE, deployment_id="r1")
            broker.publish(topics.device_topic(device_id, "state"), encode(state), retain=True)
    leadership.stop()  # stepping down writes what is queued
    assert {row.device_id: row.state for row in registry.deployment_devices("r1")} == {"a": "done", "b": "done"}
    assert registry.writes <= 2  # batched: both devices in one transaction, or two at most
    db.close()
