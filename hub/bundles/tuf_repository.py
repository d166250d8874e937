"""The hub's TUF repository (python-tuf): keys made on first start, signed metadata for every bundle.

Layout under ``root_dir``::

    keys/{role}.pem           private keys (PKCS8, mode 0600), one per role
    metadata/{N}.root.json    every root version (devices walk them to follow key rotation)
    metadata/timestamp.json   the only unversioned file
    metadata/{N}.snapshot.json, metadata/{N}.targets.json   consistent snapshots

Devices are provisioned with a root (the trust anchor) and from then on accept only metadata chained to
it: unsigned, tampered, expired or rolled-back metadata and bundles are refused by their TUF client.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from hub.errors import NotFoundError, SigningError

ROLES: Final = ("root", "targets", "snapshot", "timestamp")


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata stays valid after signing."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class TufRepository:
    """Owns the keys and metadata; thread-safe; every change re-signs targets, snapshot and timestamp."""

    def __init__(
        self, root_dir: Path, *, expiry: Expiry | None = None, clock: Callable[[], datetime] = _utcnow
    ) -> None:
        self.root_dir = root_dir
        self.keys_dir = root_dir / "keys"
        self.metadata_dir = root_dir / "metadata"
        self.expiry = expiry or Expiry()
        self._clock = clock
        self._lock = threading.RLock()
        self._signers: dict[str, Any] = {}
        try:
            if (self.metadata_dir / "1.root.json").exists():
                self._load()
            else:
                self._create()
        except (OSError, ValueError) as exc:
            raise SigningError(f"cannot initialise the TUF repository in {root_dir}: {exc}") from exc

    # -- public surface -------------------------------------------------------------------------------

    def trusted_root(self) -> bytes:
        """The current root metadata: what a device is provisioned with."""
        return self._latest_root_path().read_bytes()

    def metadata_file(self, name: str) -> bytes:
        """Return one metadata file by the name a TUF client asks for (``timestamp.json``, ``3.root.json``...)."""
        if "/" in name or name.startswith(".") or not name.endswith(".json"):
            raise NotFoundError(f"invalid metadata name {name!r}")
        path = self.metadata_dir / name
        if not path.is_file():
            raise NotFoundError(f"no metadata file {name}")
        return path.read_bytes()

    def add_target(self, target_path: str, data: bytes, custom: dict[str, Any] | None = None) -> int:
        """Sign ``data`` as ``target_path`` with optional custom fields; return the new targets version."""
        from tuf.api.metadata import TargetFile

        with self._lock:
            targets = self._read("targets")
            info = TargetFile.from_data(target_path, data, ["sha256"])
            info.unrecognized_fields["custom"] = custom or {}
            targets.signed.targets[target_path] = info
            return self._publish_targets(targets)

    def refresh_timestamp(self) -> int:
        """Re-sign snapshot and timestamp with fresh expiry (run periodically); return timestamp version."""
        with self._lock:
            snapshot_version = self._publish_snapshot(self._read("targets").signed.version)
            return self._publish_timestamp(snapshot_version)

    def rotate_key(self, role: str) -> int:
        """Replace ``role``'s key with a new one in a new root version; return that root version."""
        from securesystemslib.signer import CryptoSigner

        if role not in ROLES:
            raise SigningError(f"unknown TUF role {role!r}")
        with self._lock:
            root = self._read_root()
            old_signer = self._signers[role]
            new_signer = CryptoSigner.generate_ed25519()
            root.signed.revoke_key(old_signer.public_key.keyid, role)
            root.signed.add_key(new_signer.public_key, role)
            root.signed.version += 1
            root.signed.expires = self._clock() + self.expiry.root
            root.signatures.clear()
            # The new root is signed by the old and the new root key so devices can chain to it.
            root.sign(self._signers["root"], append=True)
            if role == "root":
                root.sign(new_signer, append=True)
            self._signers[role] = new_signer
            self._save_key(role, new_signer)
            self._write(root, f"{root.signed.version}.root.json")
            self._publish_targets(self._read("targets"))
            return int(root.signed.version)

    # -- internals --------------------------------------------------------------------------------------

    def _create(self) -> None:
        from securesystemslib.signer import CryptoSigner
        from tuf.api.metadata import Metadata, Root, Targets

        self.keys_dir.mkdir(parents=True, exist_ok=True)
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)
        now = self._clock()
        root = Root(expires=now + self.expiry.root, consistent_snapshot=True)
        for role in ROLES:
            signer = CryptoSigner.generate_ed25519()
            self._signers[role] = signer
            self._save_key(role, signer)
            root.add_key(signer.public_key, role)
        root_md = Metadata(root)
        root_md.sign(self._signers["root"])
        self._write(root_md, "1.root.json")
        self._publish_targets(Metadata(Targets(version=1, expires=now + self.expiry.targets)), bump=False)

    def _load(self) -> None:
        from securesystemslib.signer import CryptoSigner

        root = self._read_root().signed
        for role in ROLES:
            keyid = root.roles[role].keyids[0]
            self._signers[role] = CryptoSigner.from_priv_key_uri(
                f"file2:{self.keys_dir / f'{role}.pem'}", root.keys[keyid]
            )

    def _save_key(self, role: str, signer: Any) -> None:
        path = self.keys_dir / f"{role}.pem"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(signer.private_bytes)
        os.replace(tmp, path)

    def _publish_targets(self, targets: Any, *, bump: bool = True) -> int:
        if bump:
            targets.signed.version += 1
        targets.signed.expires = self._clock() + self.expiry.targets
        targets.signatures.clear()
        targets.sign(self._signers["targets"])
        self._write(targets, f"{targets.signed.version}.targets.json")
        self._write(targets, "targets.json")  # the hub's own pointer to the latest
        snapshot_version = self._publish_snapshot(targets.signed.version)
        self._publish_timestamp(snapshot_version)
        return int(targets.signed.version)

    def _publish_snapshot(self, targets_version: int) -> int:
        from tuf.api.metadata import Metadata, MetaFile, Snapshot

        previous = self._optional("snapshot.json")
        version = previous.signed.version + 1 if previous else 1
        snapshot = Metadata(
            Snapshot(
                version=version,
                expires=self._clock() + self.expiry.snapshot,
                meta={"targets.json": MetaFile(version=targets_version)},
            )
        )
        snapshot.sign(self._signers["snapshot"])
        self._write(snapshot, f"{version}.snapshot.json")
        self._write(snapshot, "snapshot.json")
        return version

    def _publish_timestamp(self, snapshot_version: int) -> int:
        from tuf.api.metadata import Metadata, MetaFile, Timestamp

        previous = self._optional("timestamp.json")
        version = previous.signed.version + 1 if previous else 1
        timestamp = Metadata(
            Timestamp(
                version=version,
                expires=self._clock() + self.expiry.timestamp,
                snapshot_meta=MetaFile(version=snapshot_version),
            )
        )
        timestamp.sign(self._signers["timestamp"])
        self._write(timestamp, "timestamp.json")
        return version

    def _latest_root_path(self) -> Path:
        versions = sorted(int(p.name.split(".")[0]) for p in self.metadata_dir.glob("*.root.json"))
        return self.metadata_dir / f"{versions[-1]}.root.json"

    def _read_root(self) -> Any:
        from tuf.api.metadata import Metadata

        return Metadata.from_bytes(self._latest_root_path().read_bytes())

    def _read(self, role: str) -> Any:
        from tuf.api.metadata import Metadata

        return Metadata.from_bytes((self.metadata_dir / f"{role}.json").read_bytes())

    def _optional(self, name: str) -> Any:
        from tuf.api.metadata import Metadata

        path = self.metadata_dir / name
        return Metadata.from_bytes(path.read_bytes()) if path.exists() else None

    def _write(self, metadata: Any, name: str) -> None:
        from tuf.api.serialization.json import JSONSerializer

        path = self.metadata_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(metadata.to_bytes(JSONSerializer(compact=True)))
        os.replace(tmp, path)
