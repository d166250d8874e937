"""INSTALL: writes the slot, checks the manifest, and on a full disk leaves no partial file and says ENOSPC."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import agent.update.slots as slots_module
from agent.state_store import Slot
from agent.update.install import Install
from agent.update.table import Event, run_handler
from fleet.wire.messages import UpdateState
from tests.agent.conftest import Device, MemoryHub
from tests.agent.update.helpers import ledger, record, slots


def _install(device: Device) -> Install:
    return Install(ledger(device), device.downloader, slots(device))


def test_writes_the_slot_and_names_it_the_candidate(device: Device, memory_hub: MemoryHub) -> None:
    order = memory_hub.publish("1.0.0")
    downloaded = device.downloader.download(order, timeout_s=5)
    rec = record(order, UpdateState.INSTALL)
    assert run_handler(_install(device), rec).event is Event.OK
    assert rec.candidate is not None and rec.candidate.sha256 == order.sha256
    slot = Path(rec.candidate.path)
    assert slot.parent == device.slots_dir and slot.read_bytes() == downloaded.read_bytes()
    assert device.updater.state.active is None  # the active model is untouched until COMMIT


def test_a_manifest_that_contradicts_the_order_is_refused_and_its_slot_removed(
    device: Device, memory_hub: MemoryHub
) -> None:
    order = memory_hub.publish("1.0.0").model_copy(update={"model": "other"})
    device.downloader.download(order, timeout_s=5)
    rec = record(order, UpdateState.INSTALL)
    outcome = run_handler(_install(device), rec)
    assert outcome.event is Event.FAIL and "bundle manifest says m:1.0.0" in outcome.detail
    assert rec.candidate is None and list(device.slots_dir.iterdir()) == []


def test_a_full_disk_fails_with_enospc_and_leaves_no_partial_files(
    device: Device, memory_hub: MemoryHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = memory_hub.publish("1.0.0")
    device.downloader.download(order, timeout_s=5)

    def disk_fills_up(_source: Path, destination: Path) -> None:
        destination.write_bytes(b"half a bundle")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(slots_module, "_copy", disk_fills_up)
    rec = record(order, UpdateState.INSTALL)
    outcome = run_handler(_install(device), rec)
    assert outcome.event is Event.FAIL and "ENOSPC (No space left on device)" in outcome.detail
    assert list(device.slots_dir.iterdir()) == []
    assert list(device.downloader.directory.iterdir()) == []  # the download is freed too
    assert rec.candidate is None


def test_an_active_bundle_is_not_installed_again(device: Device, memory_hub: MemoryHub) -> None:
    order = memory_hub.publish("1.0.0")
    rec = record(order, UpdateState.INSTALL)
    device.updater.state.active = Slot(model="m", version="1.0.0", target=order.target, sha256=order.sha256, path="x")
    assert run_handler(_install(device), rec).detail == "already active"
    assert list(device.slots_dir.iterdir()) == []
