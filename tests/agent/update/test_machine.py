"""`Updater`: the record is saved before every state; failures end in FAILED with the reason, never stuck;
a full disk is survived and the next order succeeds, also after a restart."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

import agent.update.slots as slots_module
from agent.errors import StorageError
from agent.state_store import AgentState, StateStore
from fleet.wire.messages import UpdateState as S
from tests.agent.conftest import GOLDEN_Y, Device, MemoryHub


def test_an_order_runs_every_state_and_each_is_saved_before_it_is_entered(
    device: Device, memory_hub: MemoryHub
) -> None:
    order = memory_hub.publish("1.0.0")
    saved_on_entry: list[S] = []

    def check(state: S) -> None:
        record = StateStore(device.store.path).load().update
        assert record is not None
        saved_on_entry.append(record.state)
        assert record.state == state

    device.updater._before_step = check
    assert device.updater.apply(order) == S.DONE
    assert saved_on_entry == [S.DOWNLOAD, S.VERIFY, S.INSTALL, S.HEALTH_CHECK, S.COMMIT]
    assert [r[1] for r in device.reports] == [*saved_on_entry, S.DONE]
    assert [m.sha256 for m in device.served if m] == [order.sha256]
    assert device.updater.apply(order) == S.DONE and len(device.served) == 1  # a repeated order is a no-op


def test_a_failed_health_check_rolls_back_and_keeps_serving_the_old_model(
    device: Device, memory_hub: MemoryHub
) -> None:
    assert device.updater.apply(memory_hub.publish("1.0.0")) == S.DONE
    bad = memory_hub.publish("1.1.0", golden_y=GOLDEN_Y[:, ::-1].copy())
    assert device.updater.apply(bad) == S.FAILED
    assert [r[1] for r in device.reports[-3:]] == [S.HEALTH_CHECK, S.ROLLBACK, S.FAILED]
    assert device.reports[-1][3].startswith("rolled back, still serving m:1.0.0: self-test failed")
    assert len(device.served) == 1


def test_a_full_disk_at_install_fails_clearly_and_the_next_order_succeeds_after_a_restart(
    device: Device, memory_hub: MemoryHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert device.updater.apply(memory_hub.publish("1.0.0")) == S.DONE
    order = memory_hub.publish("1.1.0")

    def no_space(_source: Path, destination: Path) -> None:
        destination.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(slots_module, "_copy", no_space)
    assert device.updater.apply(order) == S.FAILED
    saved = StateStore(device.store.path).load()
    assert saved.update is not None and saved.update.state == S.FAILED  # not stuck at install
    assert "ENOSPC (No space left on device)" in saved.update.detail
    assert not list(device.slots_dir.glob("*.tmp")) and not list(device.downloader.directory.iterdir())
    assert saved.active is not None and saved.active.version == "1.0.0"
    monkeypatch.undo()  # space is back
    restarted = device.restart()
    assert restarted.pending() is None
    assert (
        restarted.apply(memory_hub.order(order.sha256, order.size_bytes, version="1.1.0", tuf_target=order.tuf_target))
        == S.DONE
    )
    assert restarted.state.active is not None and restarted.state.active.version == "1.1.0"


def test_an_unknown_bundle_fails_at_once_with_the_hubs_answer(device: Device, memory_hub: MemoryHub) -> None:
    order = memory_hub.order("ee" * 32, 50_000, version="1.0.0")
    started = time.monotonic()
    assert device.updater.apply(order) == S.FAILED
    assert time.monotonic() - started < 1.0  # the download timeout is 5 s, the chunk timeout 0.5 s
    assert device.reports[-1][1:] == (
        S.FAILED,
        False,
        f"the hub refused bundle eeeeeeeeeeee: the hub has no bundle {'ee' * 32}",
    )


def test_a_state_that_cannot_be_saved_is_not_entered(
    device: Device, memory_hub: MemoryHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = memory_hub.publish("1.0.0")
    save = StateStore.save

    def full_at_health_check(store: StateStore, state: AgentState) -> None:
        if state.update is not None and state.update.state == S.HEALTH_CHECK:
            raise StorageError("cannot save agent state: ENOSPC (No space left on device)")
        save(store, state)

    monkeypatch.setattr(StateStore, "save", full_at_health_check)
    assert device.updater.apply(order) == S.FAILED
    assert [r[1] for r in device.reports] == [S.DOWNLOAD, S.VERIFY, S.INSTALL, S.FAILED]
    assert "ENOSPC" in device.reports[-1][3] and device.served == []
