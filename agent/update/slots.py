"""`SlotStore`: installed bundles, one content-addressed file per bundle, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from agent.errors import storage_error

_BLOCK = 1 << 20


class SlotStore:
    """Bundles installed under ``directory`` as ``{sha256}.zip``; a slot file is complete or absent."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the slot of ``sha256`` lives."""
        return self.directory / f"{sha256}.zip"

    def install(self, source: Path, sha256: str) -> Path:
        """Copy ``source`` into the slot of ``sha256`` (no-op if present); a failed write leaves no partial file."""
        slot = self.path(sha256)
        if slot.exists():
            return slot
        tmp = slot.with_suffix(".tmp")
        try:
            _copy(source, tmp)
            tmp.replace(slot)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise storage_error(f"cannot install the bundle into {slot}", exc) from exc
        return slot

    def remove(self, sha256: str) -> None:
        """Delete the slot of ``sha256`` and any partial copy of it."""
        self.path(sha256).unlink(missing_ok=True)
        self.path(sha256).with_suffix(".tmp").unlink(missing_ok=True)

    def collect_garbage(self, keep: set[str]) -> None:
        """Delete every slot (and partial copy) whose digest is not in ``keep``."""
        for path in [*self.directory.glob("*.zip"), *self.directory.glob("*.tmp")]:
            if path.stem not in keep:
                path.unlink(missing_ok=True)


def _copy(source: Path, destination: Path) -> None:
    with source.open("rb") as reader, destination.open("wb") as writer:
        while block := reader.read(_BLOCK):
            writer.write(block)
        writer.flush()
        os.fsync(writer.fileno())
