"""``edgefleet keys``: the hub's TUF signing keys and the expiry of what they sign.

Private keys are read with the passphrase in ``EDGEFLEET_KEY_PASSPHRASE`` when they are encrypted. The
commands work on the key files in the hub's data directory (never its database), also while the hub runs (changes
are serialised by a file lock, and the running hub picks up new keys and root versions from disk). They stay off
the REST API by design: private and offline root keys never travel over it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hub.cli.output import JSON_ALWAYS_OPTION, fail
from hub.errors import SigningError

if TYPE_CHECKING:
    from securesystemslib.signer import CryptoSigner

    from hub.bundles.tuf_repository import TufRepository

__all__ = ["register"]

keys_app = typer.Typer(help="TUF signing keys: root kept offline, re-signing, rotation, expiry.", no_args_is_help=True)

DataDirOpt = typer.Option(Path("var/hub"), "--data-dir", help="the hub's data directory")
RootKeyOpt = typer.Option([], "--root-key", help="an offline root key file (repeatable, for a threshold)")


def _tuf_dir(data_dir: Path) -> Path:
    return data_dir / "tuf"


def _open(data_dir: Path) -> TufRepository:
    from hub.bundles.keys import passphrase_from_env
    from hub.bundles.tuf_repository import TufRepository, latest_root_path

    latest_root_path(_tuf_dir(data_dir) / "metadata")  # refuse a directory without a repository
    return TufRepository(_tuf_dir(data_dir), passphrase=passphrase_from_env())


def _offline_signers(files: list[Path]) -> list[CryptoSigner]:
    from hub.bundles.keys import passphrase_from_env, read_key_file

    return [read_key_file(path, passphrase_from_env()) for path in files]


@keys_app.command("init")
def init(
    data_dir: Path = DataDirOpt,
    root_threshold: int = typer.Option(1, min=1, help="root key signatures each root version needs"),
    root_keys: int | None = typer.Option(None, min=1, help="root keys to make (default: the threshold)"),
    as_json: bool = JSON_ALWAYS_OPTION,
) -> None:
    """Create the hub's TUF repository and keys (the hub does this itself at first start, with one root key)."""
    from hub.bundles.keys import passphrase_from_env
    from hub.bundles.tuf_repository import TufRepository

    if (_tuf_dir(data_dir) / "metadata" / "1.root.json").exists():
        fail(f"a TUF repository exists in {_tuf_dir(data_dir)}")
    try:
        repo = TufRepository(
            _tuf_dir(data_dir),
            passphrase=passphrase_from_env(),
            root_threshold=root_threshold,
            root_keys=root_keys,
        )
    except SigningError as exc:
        fail(exc)
    present, threshold = repo.root_keys_on_hub()
    typer.echo(json.dumps({"repository": str(repo.root_dir), "root_keys": present, "root_threshold": threshold}))


@keys_app.command("status")
def status(data_dir: Path = DataDirOpt, as_json: bool = JSON_ALWAYS_OPTION) -> None:
    """Each role's version and expiry, and the root keys on the hub; warns (exit 1) when action is needed."""
    from hub.bundles.tuf_repository import expiry_warnings, metadata_expiry, root_keys_on_hub

    now = datetime.now(UTC)
    try:
        expiry = metadata_expiry(_tuf_dir(data_dir) / "metadata")
        present, threshold = root_keys_on_hub(_tuf_dir(data_dir))
        warnings = expiry_warnings(_tuf_dir(data_dir), now)
    except (SigningError, OSError) as exc:
        fail(exc)
    report = {
        "roles": {
            role: {"expires": f"{at:%Y-%m-%dT%H:%M:%SZ}", "days_left": round((at - now).total_seconds() / 86400, 2)}
            for role, at in expiry.items()
        },
        "root_keys_on_hub": present,
        "root_threshold": threshold,
        "warnings": warnings,
    }
    typer.echo(json.dumps(report, indent=2))
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    if warnings:
        raise typer.Exit(1)


@keys_app.command("export-root")
def export_root(
    out: Path = typer.Option(..., "--out", help="file to write the root private key to (must not exist)"),
    data_dir: Path = DataDirOpt,
    keyid: str | None = typer.Option(None, help="which root key (a keyid prefix) when there are several"),
    as_json: bool = JSON_ALWAYS_OPTION,
) -> None:
    """Move a root private key out of the hub (the hub keeps only its public key); store FILE offline."""
    try:
        chosen = _open(data_dir).export_root_key(out, keyid)
    except SigningError as exc:
        fail(exc)
    typer.echo(json.dumps({"exported": chosen, "file": str(out)}))


@keys_app.command("sign-root")
def sign_root(
    root_key: list[Path] = RootKeyOpt, data_dir: Path = DataDirOpt, as_json: bool = JSON_ALWAYS_OPTION
) -> None:
    """Sign the next root version (fresh expiry) with the offline root keys; devices chain to it."""
    try:
        repo = _open(data_dir)
        version = repo.sign_root(_offline_signers(root_key))
    except SigningError as exc:
        fail(exc)
    expires = repo.seconds_to_expiry()["root"]
    typer.echo(json.dumps({"root_version": version, "days_left": round(expires / 86400, 2)}))


@keys_app.command("rotate")
def rotate(
    role: str = typer.Argument(..., help="root, targets, snapshot or timestamp"),
    root_key: list[Path] = RootKeyOpt,
    keyid: str | None = typer.Option(None, help="the key to replace (a keyid prefix) when the role has several"),
    data_dir: Path = DataDirOpt,
    as_json: bool = JSON_ALWAYS_OPTION,
) -> None:
    """Replace a role's key with a new one in a new root version (signed with the root keys at hand)."""
    try:
        repo = _open(data_dir)
        version = repo.rotate_key(role, old_keyid=keyid, offline_signers=_offline_signers(root_key))
    except SigningError as exc:
        fail(exc)
    typer.echo(json.dumps({"role": role, "root_version": version}))


@keys_app.command("passphrase")
def passphrase(
    data_dir: Path = DataDirOpt,
    new_from: str = typer.Option(
        "EDGEFLEET_NEW_KEY_PASSPHRASE", help="environment variable holding the new passphrase (empty: no encryption)"
    ),
    as_json: bool = JSON_ALWAYS_OPTION,
) -> None:
    """Re-encrypt the keys on the hub: read with EDGEFLEET_KEY_PASSPHRASE (unset: plaintext), write with the new
    passphrase. Restart the hub with EDGEFLEET_KEY_PASSPHRASE set to the new one."""
    import os

    from hub.bundles.keys import KeyStore, passphrase_from_env

    new = os.environ.get(new_from, "").encode() or None
    try:
        _open(data_dir)  # the current passphrase must open the repository
        rewritten = KeyStore(_tuf_dir(data_dir) / "keys", passphrase_from_env()).reencrypt(new)
    except SigningError as exc:
        fail(exc)
    typer.echo(json.dumps({"keys": len(rewritten), "encrypted": new is not None}))


def register(app: typer.Typer) -> None:
    """Add the ``keys`` command group to ``app``."""
    app.add_typer(keys_app, name="keys")
