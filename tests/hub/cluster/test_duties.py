"""`FencedOrders` refuses to send once its replica no longer leads; `LeaderDuties` hands the manager over."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.wire.messages import DeploymentOrder
from fleet.wire.transport import InMemoryBroker
from hub.bundles.refresh import MetadataRefresher
from hub.cluster import AlwaysLeader, FencedError, FencedOrders, LeaderDuties
from hub.devices.traffic import DeviceTraffic
from hub.registry import Database, Registry
from hub.rollouts.manager import RolloutManager


class Orders:
    """An order sink that keeps what it was asked to do."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def order_for(self, deployment_id: str, bundle_sha256: str, **_: object) -> DeploymentOrder:
        raise NotImplementedError

    def send(self, device_id: str, order: DeploymentOrder) -> None:
        self.sent.append(device_id)

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
