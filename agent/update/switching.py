"""What COMMIT and ROLLBACK share: both switch the device's slots and the model being served."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.model import ServableModel
from agent.transfer import ChunkDownloader
from agent.update.ledger import Ledger
from agent.update.models import CandidateCache
from agent.update.slots import SlotStore

__all__ = ["Activate", "SlotSwitch"]

Activate = Callable[[ServableModel | None], None]


@dataclass
class SlotSwitch:
    """The services a handler that changes what is installed and served needs."""

    ledger: Ledger
    downloader: ChunkDownloader
    slots: SlotStore
    candidates: CandidateCache
    activate: Activate
    activate_shadow: Activate
