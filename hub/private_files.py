"""Owner-only files and directories for the hub's secrets (keys, hub.secret, the SQLite database).

Created with their final mode in the ``open``/``mkdir`` call itself, so there is no moment when another
user could open them; the process umask can only make them stricter.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["create_private", "private_dir", "write_private"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700; tighten it to 0700 when it already exists."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(DIR_MODE)
    return path


def create_private(path: Path) -> bool:
    """Create an empty 0600 file at ``path`` unless one exists; return whether it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically as a 0600 file (a temporary file renamed over it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover could carry a looser mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
