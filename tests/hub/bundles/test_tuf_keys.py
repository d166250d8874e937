"""TUF private keys at rest: owner-only files, encrypted with the passphrase from the environment, refused with
one clear line when it is missing or wrong, exportable out of the hub, and readable as earlier hubs wrote them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from hub.bundles.keys import PASSPHRASE_ENV, passphrase_from_env, read_key_file
from hub.bundles.tuf_repository import TufRepository
from hub.errors import SigningError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with umask 0, so only the modes the code asks for protect the files."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("open_umask")
def test_key_files_are_owner_only(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    keys = sorted(repo.keys_dir.iterdir())
    assert [k.name.split("-")[0] for k in keys] == ["root", "snapshot", "targets", "timestamp"]
    assert {_mode(k) for k in keys} == {0o600}
    assert _mode(repo.keys_dir) == 0o700 and _mode(tmp_path / "tuf") == 0o700
    repo.rotate_key("targets")
    assert {_mode(k) for k in repo.keys_dir.iterdir()} == {0o600} and len(list(repo.keys_dir.iterdir())) == 4
    repo.export_root_key(tmp_path / "root.pem")
    assert _mode(tmp_path / "root.pem") == 0o600


def test_encrypted_keys_are_unreadable_without_the_passphrase(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf", passphrase=b"correct horse")
    for key in repo.keys_dir.iterdir():
        pem = key.read_bytes()
        assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(TypeError, match="encrypted"):
            load_pem_private_key(pem, None)
        load_pem_private_key(pem, b"correct horse")
    with pytest.raises(SigningError) as missing:
        TufRepository(tmp_path / "tuf")
    assert f"is encrypted: set {PASSPHRASE_ENV}" in str(missing.value) and "\n" not in str(missing.value)
    with pytest.raises(SigningError) as wrong:
        TufRepository(tmp_path / "tuf", passphrase=b"wrong")
    assert f"wrong passphrase in {PASSPHRASE_ENV}" in str(wrong.value) and "\n" not in str(wrong.value)
    reopened = TufRepository(tmp_path / "tuf", passphrase=b"correct horse")
    assert reopened.add_target("m/1/x.zip", b"data") == 2


def test_exported_root_key_stays_encrypted_and_leaves_the_hub(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf", passphrase=b"pw")
    keyid = repo.export_root_key(tmp_path / "root.pem")
    assert repo.keys.find("root", keyid) is None
    with pytest.raises(SigningError, match="is encrypted"):
        read_key_file(tmp_path / "root.pem", None)
    assert read_key_file(tmp_path / "root.pem", b"pw").public_key.keyid == keyid
    with pytest.raises(SigningError, match="exists: refusing to overwrite"):
        TufRepository(tmp_path / "other").export_root_key(tmp_path / "root.pem")


def test_passphrase_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    assert passphrase_from_env() is None
    monkeypatch.setenv(PASSPHRASE_ENV, "s3cret")
    assert passphrase_from_env() == b"s3cret"


def test_keys_named_as_by_earlier_hubs_still_load(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    for key in list(repo.keys_dir.iterdir()):  # earlier hubs wrote keys/{role}.pem
        key.rename(repo.keys_dir / f"{key.name.split('-')[0]}.pem")
    reopened = TufRepository(tmp_path / "tuf")
    assert reopened.root_keys_on_hub() == (1, 1)
    assert reopened.sign_root() == 2
    assert reopened.rotate_key("timestamp") == 3
    assert not (repo.keys_dir / "timestamp.pem").exists()


def test_a_missing_online_key_is_one_clear_error(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    next(repo.keys_dir.glob("targets-*")).unlink()
    with pytest.raises(SigningError, match=r"the targets key .* is missing from"):
        TufRepository(tmp_path / "tuf")


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(SigningError, match="not a PEM private key"):
        read_key_file(tmp_path / "junk.pem", None)
    with pytest.raises(SigningError, match="cannot read TUF key"):
        read_key_file(tmp_path / "absent.pem", None)
