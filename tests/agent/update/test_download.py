"""DOWNLOAD: fetches the bundle, skips an active one, fails at once on a hub refusal."""

from __future__ import annotations

import hashlib

from agent.state_store import Slot
from agent.update.download import Download
from agent.update.table import Event, run_handler
from fleet.wire.messages import UpdateState
from tests.agent.conftest import Device, MemoryHub
from tests.agent.update.helpers import ledger, record


def _handler(device: Device, progress: list[float]) -> Download:
    return Download(ledger(device), device.downloader, timeout_s=5, progress=lambda _r, p: progress.append(p))


def test_downloads_the_ordered_bundle_and_reports_progress(device: Device, memory_hub: MemoryHub) -> None:
    order = memory_hub.publish("1.0.0")
    progress: list[float] = []
    outcome = run_handler(_handler(device, progress), record(order, UpdateState.DOWNLOAD))
    assert outcome.event is Event.OK
    path = device.downloader.final_path(order.sha256)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == order.sha256
    assert progress[0] == 0.0 and progress[-1] == 1.0


def test_an_active_bundle_is_not_fetched_again(device: Device, memory_hub: MemoryHub) -> None:
    order = memory_hub.publish("1.0.0")
    device.updater.state.active = Slot(model="m", version="1.0.0", target=order.target, sha256=order.sha256, path="x")
    outcome = run_handler(_handler(device, []), record(order, UpdateState.DOWNLOAD))
    assert outcome.detail == "already active" and device.downloader.requests_sent == 0
    assert not device.downloader.final_path(order.sha256).exists()


def test_a_bundle_the_hub_lacks_fails_after_one_request_with_the_hubs_reason(
    device: Device, memory_hub: MemoryHub
) -> None:
    order = memory_hub.order("cd" * 32, 5000, version="1.0.0")
    outcome = run_handler(_handler(device, []), record(order, UpdateState.DOWNLOAD))
    assert outcome.event is Event.FAIL
    assert f"the hub has no bundle {'cd' * 32}" in outcome.detail
    assert device.downloader.requests_sent == 1
    assert list(device.downloader.directory.iterdir()) == []
