"""The hub's TUF repository (python-tuf): keys made on first start, signed metadata for every bundle.

Layout under ``root_dir``::

    keys/                     private keys (`hub.bundles.keys`), 0700; the root keys may be kept offline
    metadata/{N}.root.json    every root version (devices walk them to follow key rotation and re-signing)
    metadata/timestamp.json   the only unversioned file
    metadata/{N}.snapshot.json, metadata/{N}.targets.json   consistent snapshots
    .lock                     serialises changes across processes (a running hub and the CLI)

Devices are provisioned with a root (the trust anchor) and from then on accept only metadata chained to
it: unsigned, tampered, expired or rolled-back metadata and bundles are refused by their TUF client.

Nothing expires under a running hub: `TufRepository.refresh` (called by `hub.bundles.refresh`) re-signs
each role once less than half of its lifetime is left, root included while enough root keys are on the
hub. A root whose keys are offline is re-signed with them by `TufRepository.sign_root`
(``edgefleet keys sign-root``); `metadata_expiry` tells how long each role has left.
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hub.bundles.keys import KeyStore, new_signer
from hub.errors import NotFoundError, SigningError
from hub.private_files import create_private, private_dir

if TYPE_CHECKING:
    from securesystemslib.signer import CryptoSigner

log = logging.getLogger(__name__)

ROLES: Final = ("root", "targets", "snapshot", "timestamp")
ONLINE_ROLES: Final = ("targets", "snapshot", "timestamp")
REFRESH_WHEN_LEFT: Final = 0.5  # re-sign a role once less than this share of its lifetime remains


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata stays valid after signing."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)

    def lifetime(self, role: str) -> timedelta:
        """The validity of ``role``'s metadata."""
        value: timedelta = getattr(self, role)
        return value


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def latest_root_path(metadata_dir: Path) -> Path:
    """The newest ``{N}.root.json`` in ``metadata_dir``."""
    versions = sorted(int(p.name.split(".")[0]) for p in metadata_dir.glob("*.root.json"))
    if not versions:
        raise SigningError(f"no TUF repository in {metadata_dir.parent} (no root metadata)")
    return metadata_dir / f"{versions[-1]}.root.json"


def metadata_expiry(metadata_dir: Path) -> dict[str, datetime]:
    """When the current metadata of each role expires (read from disk, no keys needed)."""
    paths = {"root": latest_root_path(metadata_dir)} | {r: metadata_dir / f"{r}.json" for r in ONLINE_ROLES}
    return {role: _parse_expires(json.loads(path.read_bytes())["signed"]["expires"]) for role, path in paths.items()}


def root_keys_on_hub(root_dir: Path) -> tuple[int, int]:
    """How many root keys of the current root are on the hub, and how many signatures a root version needs."""
    root = json.loads(latest_root_path(root_dir / "metadata").read_bytes())["signed"]
    store = KeyStore(root_dir / "keys", None)
    present = sum(store.find("root", keyid) is not None for keyid in root["roles"]["root"]["keyids"])
    return present, int(root["roles"]["root"]["threshold"])


def expiry_warnings(root_dir: Path, now: datetime, expiry: Expiry | None = None) -> list[str]:
    """What an operator must act on: expired metadata, and a root half-way to expiry whose keys are offline."""
    expiry = expiry or Expiry()
    warnings = []
    for role, expires in metadata_expiry(root_dir / "metadata").items():
        left = expires - now
        if left <= timedelta(0):
            warnings.append(f"{role} metadata expired at {expires:%Y-%m-%d %H:%M} UTC: devices refuse every update")
        elif role == "root" and left < expiry.root * REFRESH_WHEN_LEFT:
            present, threshold = root_keys_on_hub(root_dir)
            if present < threshold:
                warnings.append(
                    f"root metadata expires at {expires:%Y-%m-%d} ({left.days} days) and {threshold - present} of "
                    f"its {threshold} needed keys are offline: run `edgefleet keys sign-root --root-key FILE`"
                )
    return warnings


def _parse_expires(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


class TufRepository:
    """Owns the keys and metadata; thread- and process-safe; every change re-signs targets, snapshot and
    timestamp. ``root_threshold`` and ``root_keys`` apply only when the repository is created."""

    def __init__(
        self,
        root_dir: Path,
        *,
        expiry: Expiry | None = None,
        clock: Callable[[], datetime] = _utcnow,
        passphrase: bytes | None = None,
        root_threshold: int = 1,
        root_keys: int | None = None,
    ) -> None:
        self.root_dir = root_dir
        self.metadata_dir = root_dir / "metadata"
        self.expiry = expiry or Expiry()
        self._clock = clock
        self._lock = threading.RLock()
        self._signers: dict[str, CryptoSigner] = {}  # online roles, reloaded when the root names another key
        self._root_warning_day: str | None = None
        try:
            private_dir(root_dir)
            self.keys = KeyStore(root_dir / "keys", passphrase)
            create_private(root_dir / ".lock")
            with self._changing():
                if not (self.metadata_dir / "1.root.json").exists():
                    self._create(root_threshold, root_keys or root_threshold)
                for role in ONLINE_ROLES:
                    self._signer(role)
        except (OSError, ValueError) as exc:
            raise SigningError(f"cannot initialise the TUF repository in {root_dir}: {exc}") from exc

    # -- public surface -------------------------------------------------------------------------------

    @property
    def keys_dir(self) -> Path:
        """Where the private keys are."""
        return self.keys.keys_dir

    def trusted_root(self) -> bytes:
        """The current root metadata: what a device is provisioned with."""
        return latest_root_path(self.metadata_dir).read_bytes()

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

        with self._changing():
            targets = self._read("targets")
            info = TargetFile.from_data(target_path, data, ["sha256"])
            info.unrecognized_fields["custom"] = custom or {}
            targets.signed.targets[target_path] = info
            return self._publish_targets(targets)

    def seconds_to_expiry(self) -> dict[str, float]:
        """Seconds until each role's current metadata expires (negative once expired)."""
        now = self._clock()
        return {role: (at - now).total_seconds() for role, at in metadata_expiry(self.metadata_dir).items()}

    def due(self) -> list[str]:
        """The roles with less than half of their lifetime left (in `ROLES` order)."""
        left = self.seconds_to_expiry()
        return [r for r in ROLES if left[r] < self.expiry.lifetime(r).total_seconds() * REFRESH_WHEN_LEFT]

    def root_keys_on_hub(self) -> tuple[int, int]:
        """How many root keys the hub holds, and how many signatures a root needs (its threshold)."""
        return root_keys_on_hub(self.root_dir)

    def refresh(self) -> list[str]:
        """Re-sign every role that is due (root only with enough root keys on the hub); return those re-signed."""
        with self._changing():
            due = self.due()
            resigned: list[str] = []
            if "root" in due:
                if self._can_sign_root():
                    self._sign_next_root(self._read_root(), ())
                    resigned.append("root")
                else:
                    self._warn_root_offline()
            if "targets" in due:
                self._publish_targets(self._read("targets"))
                return [*resigned, "targets", "snapshot", "timestamp"]
            if "snapshot" in due:
                self._publish_timestamp(self._publish_snapshot(self._read("targets").signed.version))
                return [*resigned, "snapshot", "timestamp"]
            if "timestamp" in due:
                self._publish_timestamp(self._read("snapshot").signed.version)
                resigned.append("timestamp")
            return resigned

    def sign_root(self, offline_signers: Sequence[CryptoSigner] = ()) -> int:
        """Sign the next root version (same keys, fresh expiry) with the hub's root keys plus ``offline_signers``;
        return its version. Refused unless the signatures meet the root threshold."""
        with self._changing():
            return self._sign_next_root(self._read_root(), offline_signers)

    def rotate_key(
        self, role: str, *, old_keyid: str | None = None, offline_signers: Sequence[CryptoSigner] = ()
    ) -> int:
        """Replace a key of ``role`` with a new one in a new root version; return that root version.

        The new root is signed by the old root keys (the hub's and ``offline_signers``) and, for a root key, by
        the new key too, so devices chain to it. ``old_keyid`` (or a prefix) names the key to replace when the
        role has several.
        """
        if role not in ROLES:
            raise SigningError(f"unknown TUF role {role!r}")
        with self._changing():
            root = self._read_root()
            keyids = root.signed.roles[role].keyids
            matches = [k for k in keyids if k.startswith(old_keyid or "")]
            if len(matches) != 1:
                raise SigningError(f"name the {role} key to replace, one of: {', '.join(k[:16] for k in keyids)}")
            old_keyid = matches[0]
            new = new_signer()
            root.signed.revoke_key(old_keyid, role)
            root.signed.add_key(new.public_key, role)
            extra = [*offline_signers, new] if role == "root" else list(offline_signers)
            new_path = self.keys.save(role, new)  # before the root naming it exists
            try:
                version = self._sign_next_root(root, extra)
            except SigningError:
                new_path.unlink()
                raise
            self.keys.remove(role, old_keyid)
            self._publish_targets(self._read("targets"))
            return version

    def export_root_key(self, out: Path, keyid: str | None = None) -> str:
        """Move one root private key (``keyid`` or the first still on the hub) to ``out``; return its keyid."""
        with self._changing():
            keyids = self._read_root().signed.roles["root"].keyids
            on_hub = [k for k in keyids if self.keys.find("root", k) is not None]
            chosen = [k for k in on_hub if k.startswith(keyid)] if keyid else on_hub[:1]
            if len(chosen) != 1:
                what = f"root key {keyid}" if keyid else "a root key"
                raise SigningError(f"{what} is not on the hub; root keys here: {[k[:16] for k in on_hub] or 'none'}")
            self.keys.export("root", chosen[0], out)
            return chosen[0]

    # -- internals --------------------------------------------------------------------------------------

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold this repository's lock and the cross-process file lock while changing metadata or keys."""
        with self._lock, (self.root_dir / ".lock").open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _create(self, root_threshold: int, root_keys: int) -> None:
        from tuf.api.metadata import Metadata, Root, Targets

        if not 1 <= root_threshold <= root_keys:
            raise SigningError(f"root threshold {root_threshold} needs 1 <= threshold <= root keys ({root_keys})")
        private_dir(self.metadata_dir)
        now = self._clock()
        root = Root(expires=now + self.expiry.root, consistent_snapshot=True)
        root_signers = [new_signer() for _ in range(root_keys)]
        for signer in root_signers:
            self.keys.save("root", signer)
            root.add_key(signer.public_key, "root")
        root.roles["root"].threshold = root_threshold
        for role in ONLINE_ROLES:
            signer = new_signer()
            self.keys.save(role, signer)
            root.add_key(signer.public_key, role)
        root_md = Metadata(root)
        for signer in root_signers:
            root_md.sign(signer, append=True)
        self._write(root_md, "1.root.json")
        self._publish_targets(Metadata(Targets(version=1, expires=now + self.expiry.targets)), bump=False)

    def _signer(self, role: str) -> CryptoSigner:
        """The online signer of ``role`` named by the current root (reloaded after a rotation on disk)."""
        root = self._read_root().signed
        keyid = root.roles[role].keyids[0]
        cached = self._signers.get(role)
        if cached is None or cached.public_key.keyid != keyid:
            signer = self.keys.load(role, root.keys[keyid])
            if signer is None:
                raise SigningError(f"the {role} key {keyid[:16]} is missing from {self.keys_dir}")
            self._signers[role] = cached = signer
        return cached

    def _root_signers(self, root: Any) -> list[CryptoSigner]:
        """The root keys of ``root`` that are on the hub (read each time: an export may have moved them out)."""
        signers = (self.keys.load("root", root.keys[k]) for k in root.roles["root"].keyids)
        return [s for s in signers if s is not None]

    def _can_sign_root(self) -> bool:
        present, threshold = self.root_keys_on_hub()
        return present >= threshold

    def _sign_next_root(self, root: Any, offline_signers: Sequence[CryptoSigner]) -> int:
        """Write ``root`` (possibly with changed keys) as the next version, signed by every root key at hand."""
        previous = self._read_root()
        known = set(previous.signed.roles["root"].keyids) | set(root.signed.roles["root"].keyids)
        for signer in offline_signers:
            if signer.public_key.keyid not in known:
                raise SigningError(f"key {signer.public_key.keyid[:16]} is not a root key of this repository")
        root.signed.version = previous.signed.version + 1
        root.signed.expires = self._clock() + self.expiry.root
        root.signatures.clear()
        signers = {s.public_key.keyid: s for s in [*self._root_signers(previous.signed), *offline_signers]}
        for keyid, signer in signers.items():
            if keyid in known:
                root.sign(signer, append=True)
        result = root.signed.get_root_verification_result(previous.signed, root.signed_bytes, root.signatures)
        if not result.verified:
            missing = max(result.first.missing, result.second.missing)
            raise SigningError(
                f"root version {root.signed.version} needs {missing} more root key signature(s): "
                "pass the offline root keys with --root-key"
            )
        self._write(root, f"{root.signed.version}.root.json")
        log.info("signed root version %d, valid until %s", root.signed.version, root.signed.expires)
        return int(root.signed.version)

    def _warn_root_offline(self) -> None:
        day = self._clock().date().isoformat()
        if self._root_warning_day != day:  # once a day, not at every refresh
            self._root_warning_day = day
            left = self.seconds_to_expiry()["root"] / 86400
            log.warning(
                "TUF root metadata expires in %.0f days and its keys are offline: "
                "sign the next root with `edgefleet keys sign-root --root-key FILE`",
                left,
            )

    def _publish_targets(self, targets: Any, *, bump: bool = True) -> int:
        if bump:
            targets.signed.version += 1
        targets.signed.expires = self._clock() + self.expiry.targets
        targets.signatures.clear()
        targets.sign(self._signer("targets"))
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
        snapshot.sign(self._signer("snapshot"))
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
        timestamp.sign(self._signer("timestamp"))
        self._write(timestamp, "timestamp.json")
        return version

    def _read_root(self) -> Any:
        from tuf.api.metadata import Metadata

        return Metadata.from_bytes(latest_root_path(self.metadata_dir).read_bytes())

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
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(metadata.to_bytes(JSONSerializer(compact=True)))
        tmp.replace(path)
