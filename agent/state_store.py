"""The agent's persistent state: active and last-known-good slots, and the update in progress.

Written atomically (temp file, fsync, rename, fsync of the directory) before every update step, so a power
cut leaves either the old or the new state on disk, never a torn one. A write the disk refuses (ENOSPC)
raises `StorageError` and leaves the previous file untouched, with no temp file behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.errors import AgentError, storage_error
from fleet.wire.messages import DeploymentOrder, InstalledModel, UpdateState


class Slot(BaseModel):
    """An installed bundle."""

    model_config = ConfigDict(frozen=True)
    model: str
    version: str
    target: str
    sha256: str
    path: str

    def installed(self) -> InstalledModel:
        """The wire form."""
        return InstalledModel(model=self.model, version=self.version, sha256=self.sha256, target=self.target)


class RestorePoint(BaseModel):
    """The slots as they were before COMMIT switched them: what ROLLBACK puts back."""

    active: Slot | None = None
    last_known_good: Slot | None = None
    shadow: Slot | None = None


class UpdateRecord(BaseModel):
    """An update in progress (or just finished)."""

    order: DeploymentOrder
    state: UpdateState
    detail: str = ""
    transfer_note: str = ""  # sources the download had to leave, and why: added to the final report's detail
    candidate: Slot | None = None
    restore_point: RestorePoint | None = None


class AgentState(BaseModel):
    """Everything the agent must remember across restarts."""

    active: Slot | None = None
    last_known_good: Slot | None = None
    shadow: Slot | None = None
    update: UpdateRecord | None = None
    completed_deployments: list[str] = []
    last_order_sequence: int = 0  # the highest deployment-order sequence accepted (orders below it are replays)


class StateStore:
    """Loads and saves `AgentState` at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> AgentState:
        """The saved state, or a fresh one when none exists."""
        try:
            return AgentState.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return AgentState()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "file"
            raise AgentError(
                f"agent state file {self.path} is unreadable ({where}: {first['msg']}); move it aside to start clean"
            ) from exc
        except (OSError, ValueError) as exc:
            raise AgentError(
                f"agent state file {self.path} is unreadable ({exc}); move it aside to start clean"
            ) from exc

    def save(self, state: AgentState) -> None:
        """Persist atomically; raise `StorageError` (the file unchanged) when the disk refuses the write."""
        tmp = self.path.with_suffix(".tmp")
        try:
            with tmp.open("w") as handle:
                handle.write(json.dumps(state.model_dump(mode="json")))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise storage_error(f"cannot save agent state to {self.path}", exc) from exc
        _fsync_directory(self.path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk; not every platform can open a directory.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
