"""VERIFY: only the signed bytes pass; refused bytes are discarded; downgrades need permission."""

from __future__ import annotations

from agent.state_store import Slot
from agent.update.table import Event, run_handler
from agent.update.verify import Verify
from fleet.wire.messages import UpdateState
from tests.agent.conftest import Device, MemoryHub, bundle_bytes
from tests.agent.update.helpers import ledger, record


def _verify(device: Device) -> Verify:
    return Verify(ledger(device), device.downloader, device.verifier)


def test_the_signed_bundle_passes(device: Device, memory_hub: MemoryHub) -> None:
    order = memory_hub.publish("1.0.0")
    device.downloader.download(order, timeout_s=5)
    assert run_handler(_verify(device), record(order, UpdateState.VERIFY)).event is Event.OK


def test_bytes_that_differ_from_the_signed_sha_are_refused_and_discarded(device: Device, memory_hub: MemoryHub) -> None:
    order = memory_hub.publish("1.0.0")
    downloaded = device.downloader.final_path(order.sha256)
    downloaded.write_bytes(bundle_bytes("1.0.0", model="other"))
    outcome = run_handler(_verify(device), record(order, UpdateState.VERIFY))
    assert outcome.event is Event.FAIL and "does not match its signed length and sha256" in outcome.detail
    assert not downloaded.exists()


def test_an_order_naming_another_version_than_the_signed_one_is_refused(device: Device, memory_hub: MemoryHub) -> None:
    signed = memory_hub.publish("1.0.0")
    order = signed.model_copy(update={"version": "1.0.1"})
    device.downloader.download(order, timeout_s=5)
    outcome = run_handler(_verify(device), record(order, UpdateState.VERIFY))
    assert outcome.event is Event.FAIL and "signed version is '1.0.0'" in outcome.detail


def test_an_older_version_needs_allow_downgrade(device: Device, memory_hub: MemoryHub) -> None:
    order = memory_hub.publish("1.0.0")
    device.updater.state.active = Slot(model="m", version="2.0.0", target=order.target, sha256="ef" * 32, path="x")
    device.downloader.download(order, timeout_s=5)
    refused = run_handler(_verify(device), record(order, UpdateState.VERIFY))
    assert refused.event is Event.FAIL and "older than the running 2.0.0" in refused.detail
    allowed = order.model_copy(update={"allow_downgrade": True})
    assert run_handler(_verify(device), record(allowed, UpdateState.VERIFY)).event is Event.OK
