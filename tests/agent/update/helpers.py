"""Building the parts one state handler needs, on the in-memory hub."""

from __future__ import annotations

from agent.state_store import Slot, UpdateRecord
from agent.update.ledger import Ledger
from agent.update.slots import SlotStore
from fleet.wire.messages import DeploymentOrder, UpdateState
from tests.agent.conftest import Device


def record(order: DeploymentOrder, state: UpdateState) -> UpdateRecord:
    """A persisted-style record of ``order`` in ``state``."""
    return UpdateRecord(order=order, state=state)


def ledger(device: Device) -> Ledger:
    """The device's ledger, on its state file."""
    return device.updater.ledger


def slots(device: Device) -> SlotStore:
    """The device's slot store."""
    return SlotStore(device.slots_dir)


def install(device: Device, order: DeploymentOrder) -> Slot:
    """Download the order's bundle and copy it into its slot, as the states before HEALTH_CHECK do."""
    path = device.downloader.download(order, timeout_s=5)
    slot_path = slots(device).install(path, order.sha256)
    return Slot(model=order.model, version=order.version, target=order.target, sha256=order.sha256, path=str(slot_path))
