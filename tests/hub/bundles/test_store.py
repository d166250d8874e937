"""Content-addressed store: digests, atomic writes, corruption and full-disk errors."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

from hub.bundles.store import ArtifactStore
from hub.errors import ArtifactError, NotFoundError


def test_blobs_are_named_by_digest_and_read_back_checked(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    digest = store.put_bytes(b"model")
    assert digest == hashlib.sha256(b"model").hexdigest() and store.read(digest) == b"model"
    assert store.read_range(digest, 1, 3) == b"ode" and store.size(digest) == 5
    store.path(digest).write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="corrupt on disk"):
        store.read(digest)
    with pytest.raises(NotFoundError):
        store.read("0" * 64)
    with pytest.raises(NotFoundError, match="invalid artifact digest"):
        store.path("../../etc/passwd")


def test_full_disk_leaves_no_partial_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path)

    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("hub.bundles.store.os.fsync", no_space)
    with pytest.raises(ArtifactError, match="No space left on device"):
        store.put_bytes(b"x" * 1000)
    assert not any((tmp_path / "sha256").rglob("*")) and not any((tmp_path / "tmp").iterdir())
