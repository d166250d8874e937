"""Orders carry a per-device sequence: an order older than one already accepted is a replay and is refused,
however many orders came between, and across restarts; a redelivered retained order is not a replay."""

from __future__ import annotations

import pytest

from agent.errors import ReplayedOrderError
from agent.state_store import StateStore
from fleet.wire.messages import DeploymentOrder, UpdateState
from tests.agent.conftest import Device, MemoryHub


def _sequenced(order: DeploymentOrder, sequence: int, **changes: object) -> DeploymentOrder:
    return order.model_copy(update={"sequence": sequence, **changes})


def test_a_captured_downgrade_order_is_refused_after_any_number_of_newer_orders(
    device: Device, memory_hub: MemoryHub
) -> None:
    old = _sequenced(memory_hub.publish("1.0.0"), 10)
    assert device.updater.apply(old) == UpdateState.DONE
    captured = _sequenced(old, 11, deployment_id="rollback-to-1.0.0", allow_downgrade=True)
    assert device.updater.apply(_sequenced(memory_hub.publish("1.1.0"), 12)) == UpdateState.DONE
    for sequence in range(13, 13 + 60):  # more than the 50 completed deployments the agent remembers
        device.updater.apply(_sequenced(old, sequence, deployment_id=f"noop-{sequence}", sha256="ab" * 32))
    with pytest.raises(ReplayedOrderError, match="below the accepted 72"):
        device.updater.apply(captured)
    assert device.updater.state.active is not None and device.updater.state.active.version == "1.1.0"
    restarted = device.restart()  # the accepted sequence is persisted
    assert StateStore(device.store.path).load().last_order_sequence == 72
    with pytest.raises(ReplayedOrderError):
        restarted.apply(captured)


def test_the_same_order_redelivered_is_idempotent_and_unsequenced_orders_are_refused_once_sequenced(
    device: Device, memory_hub: MemoryHub
) -> None:
    order = _sequenced(memory_hub.publish("1.0.0"), 5)
    assert device.updater.apply(order) == UpdateState.DONE
    assert device.updater.apply(order) == UpdateState.DONE  # the retained order again, after a reconnect
    with pytest.raises(ReplayedOrderError):
        device.updater.apply(_sequenced(order, 0, deployment_id="legacy"))
