"""Loading installed slots as servable models, keeping the candidate loaded between health check and commit."""

from __future__ import annotations

from pathlib import Path

from agent.bundle import read_bundle
from agent.errors import AgentError
from agent.model import ServableModel
from agent.state_store import Slot


def load_model(slot: Slot) -> ServableModel:
    """Read and load the bundle of ``slot`` (raises `AgentError` saying what is wrong)."""
    return ServableModel(read_bundle(Path(slot.path)), slot.sha256)


class CandidateCache:
    """The last loaded candidate, so COMMIT activates the very model HEALTH_CHECK tested."""

    def __init__(self) -> None:
        self._model: ServableModel | None = None

    def load(self, slot: Slot | None) -> ServableModel:
        """The model of the installed candidate ``slot``, loaded once."""
        if slot is None:
            raise AgentError("no installed candidate to check")
        if self._model is None or self._model.sha256 != slot.sha256:
            self._model = load_model(slot)
        return self._model

    def forget(self) -> None:
        """Drop the loaded candidate (after commit or rollback)."""
        self._model = None
