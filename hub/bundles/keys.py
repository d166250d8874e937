"""The hub's TUF private keys on disk: one PEM file per key, owner-only, optionally passphrase-encrypted.

Layout under ``keys_dir`` (mode 0700)::

    {role}-{keyid[:16]}.pem   PKCS8 private key, mode 0600; encrypted when a passphrase is set
    {role}.pem                the same, named as by earlier hubs (read, never written)

The passphrase comes from the environment (`PASSPHRASE_ENV`) so it never sits next to the keys. A root key
that has been exported (`KeyStore.export`) is gone from the hub: root metadata is then signed offline with
the exported file (`read_key_file`), while the online roles keep signing on the hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hub.errors import SigningError
from hub.private_files import private_dir, write_private

if TYPE_CHECKING:
    from securesystemslib.signer import CryptoSigner, Key

__all__ = ["PASSPHRASE_ENV", "KeyStore", "new_signer", "passphrase_from_env", "read_key_file", "write_key_file"]

PASSPHRASE_ENV: Final = "EDGEFLEET_KEY_PASSPHRASE"


def passphrase_from_env() -> bytes | None:
    """The key passphrase from ``EDGEFLEET_KEY_PASSPHRASE`` (None when unset or empty)."""
    value = os.environ.get(PASSPHRASE_ENV, "")
    return value.encode() if value else None


def new_signer() -> CryptoSigner:
    """A fresh ed25519 signing key."""
    from securesystemslib.signer import CryptoSigner

    return CryptoSigner.generate_ed25519()


def write_key_file(path: Path, signer: CryptoSigner, passphrase: bytes | None) -> None:
    """Write ``signer``'s private key to ``path`` (0600, atomically), encrypted when ``passphrase`` is given."""
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        Encoding,
        PrivateFormat,
        load_pem_private_key,
    )

    pem = signer.private_bytes
    if passphrase:
        private_key = load_pem_private_key(pem, None)
        pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(passphrase))
    write_private(path, pem)


def read_key_file(path: Path, passphrase: bytes | None, public_key: Key | None = None) -> CryptoSigner:
    """Load a private key file as a signer; a clear `SigningError` when it cannot be read or decrypted."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner, SSlibKey

    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read TUF key {path}: {exc.strerror or exc}") from exc
    encrypted = b"ENCRYPTED PRIVATE KEY" in pem
    if encrypted and not passphrase:
        raise SigningError(f"TUF key {path} is encrypted: set {PASSPHRASE_ENV} to its passphrase")
    try:
        private_key = load_pem_private_key(pem, passphrase if encrypted else None)
    except (ValueError, TypeError) as exc:
        reason = f"wrong passphrase in {PASSPHRASE_ENV}" if encrypted else "not a PEM private key"
        raise SigningError(f"cannot load TUF key {path}: {reason}") from exc
    signer = CryptoSigner(private_key)
    if public_key is not None and SSlibKey.from_crypto(private_key.public_key()).keyval != public_key.keyval:
        raise SigningError(f"TUF key {path} does not match key {public_key.keyid[:16]} of the trusted root")
    return signer


class KeyStore:
    """Reads and writes the private keys of a repository's roles under one owner-only directory."""

    def __init__(self, keys_dir: Path, passphrase: bytes | None) -> None:
        self.keys_dir = keys_dir
        self.passphrase = passphrase
        private_dir(keys_dir)

    def path(self, role: str, keyid: str) -> Path:
        """Where the key ``keyid`` of ``role`` is written."""
        return self.keys_dir / f"{role}-{keyid[:16]}.pem"

    def find(self, role: str, keyid: str) -> Path | None:
        """The file holding ``keyid`` of ``role``, or None when it is not on the hub (kept offline)."""
        path = self.path(role, keyid)
        if path.exists():
            return path
        legacy = self.keys_dir / f"{role}.pem"
        return legacy if legacy.exists() and not _is_other_key(legacy, keyid, self.passphrase) else None

    def save(self, role: str, signer: CryptoSigner) -> Path:
        """Store ``signer`` as a key of ``role``; return its file."""
        path = self.path(role, signer.public_key.keyid)
        write_key_file(path, signer, self.passphrase)
        return path

    def load(self, role: str, public_key: Key) -> CryptoSigner | None:
        """The signer of ``public_key``, or None when the key is not on the hub."""
        path = self.find(role, public_key.keyid)
        return None if path is None else read_key_file(path, self.passphrase, public_key)

    def remove(self, role: str, keyid: str) -> None:
        """Delete the key file of ``keyid`` (after a rotation revoked it, or an export moved it out)."""
        path = self.find(role, keyid)
        if path is not None:
            path.unlink()

    def reencrypt(self, new_passphrase: bytes | None) -> list[Path]:
        """Rewrite every key file here under ``new_passphrase`` (None: plaintext); all are read before any is
        written, so a wrong current passphrase changes nothing. Return the files rewritten."""
        paths = sorted(self.keys_dir.glob("*.pem"))
        signers = [read_key_file(path, self.passphrase) for path in paths]
        for path, signer in zip(paths, signers, strict=True):
            write_key_file(path, signer, new_passphrase)
        self.passphrase = new_passphrase
        return paths

    def export(self, role: str, keyid: str, out: Path) -> None:
        """Move the key ``keyid`` of ``role`` to ``out`` (0600; encrypted as on the hub); the hub keeps none."""
        path = self.find(role, keyid)
        if path is None:
            raise SigningError(f"{role} key {keyid[:16]} is not on the hub (already exported?)")
        if out.exists():
            raise SigningError(f"{out} exists: refusing to overwrite a key file")
        write_private(out, path.read_bytes())
        path.unlink()


def _is_other_key(path: Path, keyid: str, passphrase: bytes | None) -> bool:
    """Whether a legacy ``{role}.pem`` holds a key other than ``keyid`` (so ``keyid`` is not on the hub)."""
    return read_key_file(path, passphrase).public_key.keyid != keyid
