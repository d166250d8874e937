"""The agent's state file: round trip, a fresh state when absent, a clear error when corrupt, and a write the
disk refuses leaves the previous file intact with no temp file behind."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from agent.errors import AgentError, StorageError
from agent.state_store import AgentState, Slot, StateStore, UpdateRecord
from fleet.wire.messages import UpdateState
from tests.agent.conftest import MemoryHub

SLOT = Slot(model="m", version="1.0.0", target="x86-onnx-cpu", sha256="ab" * 32, path="/slots/a.zip")


def test_round_trip_and_fresh_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "nested" / "state.json")
    assert store.load() == AgentState()
    order = MemoryHub(tmp_path / "hub").order("ab" * 32, 10, version="1.0.0")
    state = AgentState(active=SLOT, update=UpdateRecord(order=order, state=UpdateState.INSTALL, candidate=SLOT))
    store.save(state)
    assert store.load() == state
    assert not list(store.path.parent.glob("*.tmp"))


def test_a_corrupt_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"active": {"model": "m"')
    with pytest.raises(AgentError) as refused:
        StateStore(path).load()
    message = str(refused.value)
    assert message.startswith(f"agent state file {path} is unreadable (file: Invalid JSON: EOF")
    assert message.endswith("move it aside to start clean") and "\n" not in message
    path.write_text('{"active": {"model": "m"}}')
    with pytest.raises(AgentError, match=r"unreadable \(active\.version: Field required\)"):
        StateStore(path).load()


def test_a_refused_write_keeps_the_previous_state_and_names_enospc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(AgentState(active=SLOT))

    def disk_full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StorageError, match=r"cannot save agent state to .*: ENOSPC \(No space left on device\)"):
        store.save(AgentState())
    monkeypatch.undo()
    assert store.load() == AgentState(active=SLOT)
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_state_saved_before_restore_points_existed_still_loads(tmp_path: Path) -> None:
    order = MemoryHub(tmp_path / "hub").order("ab" * 32, 10, version="1.0.0")
    old = {"update": {"order": order.model_dump(mode="json"), "state": "commit", "detail": "", "candidate": None}}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(old))
    record = StateStore(path).load().update
    assert record is not None and record.restore_point is None and record.state == UpdateState.COMMIT
