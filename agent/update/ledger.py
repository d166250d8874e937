"""`Ledger`: the agent's persisted state (installed slots, the update record) and the store that saves it."""

from __future__ import annotations

from agent.state_store import AgentState, StateStore


class Ledger:
    """What the handlers read and change about installed models; ``save`` persists it atomically."""

    def __init__(self, store: StateStore, state: AgentState | None = None) -> None:
        self.store = store
        self.state = store.load() if state is None else state

    def save(self) -> None:
        """Persist the state (raises `StorageError` when the disk refuses)."""
        self.store.save(self.state)

    def is_active(self, sha256: str) -> bool:
        """Whether the bundle ``sha256`` is the committed model."""
        return self.state.active is not None and self.state.active.sha256 == sha256

    def describe_active(self) -> str:
        """``model:version`` of the committed model, for messages."""
        active = self.state.active
        return f"{active.model}:{active.version}" if active else "no model"

    def kept_slots(self) -> set[str]:
        """Digests of the slots still in use (active, last known good, shadow)."""
        slots = (self.state.active, self.state.last_known_good, self.state.shadow)
        return {slot.sha256 for slot in slots if slot is not None}
