"""Content-addressed artifact store on local disk: blobs named by their sha256, written atomically."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from hub.errors import ArtifactError, NotFoundError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_BUFFER = 1 << 20


class ArtifactStore:
    """Blobs under ``root/sha256/ab/abcdef...``; a blob never changes once written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (whether or not it exists)."""
        if not _DIGEST.match(digest):
            raise NotFoundError(f"invalid artifact digest {digest!r}")
        return self.root / "sha256" / digest[:2] / digest

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` and return its sha256."""
        import io

        return self.put_stream(io.BytesIO(data))

    def put_stream(self, stream: BinaryIO) -> str:
        """Store everything read from ``stream``; the blob appears only when completely written."""
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                while block := stream.read(_BUFFER):
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            final = self.path(digest.hexdigest())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, final)
        except OSError as exc:
            Path(tmp_name).unlink(missing_ok=True)
            raise ArtifactError(f"cannot write artifact under {self.root}: {exc.strerror or exc}") from exc
        return digest.hexdigest()

    def read(self, digest: str) -> bytes:
        """Return the blob's bytes, checking them against the digest."""
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"artifact {digest} is not in the store") from exc
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactError(f"artifact {digest} is corrupt on disk (digest mismatch)")
        return data

    def read_range(self, digest: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset`` of the blob (no digest check: callers check chunks)."""
        try:
            with self.path(digest).open("rb") as blob:
                blob.seek(offset)
                return blob.read(length)
        except FileNotFoundError as exc:
            raise NotFoundError(f"artifact {digest} is not in the store") from exc

    def size(self, digest: str) -> int:
        """Size of the blob in bytes."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError as exc:
            raise NotFoundError(f"artifact {digest} is not in the store") from exc
