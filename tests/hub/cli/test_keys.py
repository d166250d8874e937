"""``edgefleet keys``: a threshold-2 root kept offline, signed ahead of its expiry, warned about in time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from typer.testing import CliRunner

from hub.bundles.keys import PASSPHRASE_ENV
from hub.cli import app


def _keys(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["keys", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_threshold_two_root_kept_offline_and_signed_before_it_expires(tmp_path: Path) -> None:
    data = str(tmp_path / "hub")
    code, out, _ = _keys("init", "--data-dir", data, "--root-threshold", "2")
    assert code == 0 and json.loads(out)["root_threshold"] == 2 and json.loads(out)["root_keys"] == 2
    code, _, err = _keys("init", "--data-dir", data)
    assert code == 1 and "a TUF repository exists" in err
    for name in ("a.pem", "b.pem"):
        code, out, err = _keys("export-root", "--out", str(tmp_path / name), "--data-dir", data)
        assert code == 0, err
    code, _, err = _keys("export-root", "--out", str(tmp_path / "c.pem"), "--data-dir", data)
    assert code == 1 and "is not on the hub" in err
    code, out, _ = _keys("status", "--data-dir", data)
    assert code == 0 and json.loads(out)["root_keys_on_hub"] == 0 and json.loads(out)["warnings"] == []
    with time_machine.travel(datetime.now(UTC) + timedelta(days=200), tick=False):
        code, out, err = _keys("status", "--data-dir", data)
        assert code == 1 and "root metadata expires" in err and "edgefleet keys sign-root" in err
        code, _, err = _keys("sign-root", "--root-key", str(tmp_path / "a.pem"), "--data-dir", data)
        assert code == 1 and err.strip().endswith("pass the offline root keys with --root-key")
        code, out, err = _keys(
            "sign-root",
            "--root-key",
            str(tmp_path / "a.pem"),
            "--root-key",
            str(tmp_path / "b.pem"),
            "--data-dir",
            data,
        )
        assert code == 0, err
        assert json.loads(out)["root_version"] == 2 and json.loads(out)["days_left"] == 365
        code, out, err = _keys("status", "--data-dir", data)
        assert code == 1 and "targets metadata expired" in err  # the hub re-signs it when running
        assert json.loads(out)["roles"]["root"]["days_left"] == 365


def test_rotate_an_online_key(tmp_path: Path) -> None:
    data = str(tmp_path / "hub")
    assert _keys("init", "--data-dir", data)[0] == 0
    code, out, err = _keys("rotate", "timestamp", "--data-dir", data)
    assert code == 0, err
    assert json.loads(out) == {"role": "timestamp", "root_version": 2}
    code, _, err = _keys("rotate", "nobody", "--data-dir", data)
    assert code == 1 and "unknown TUF role 'nobody'" in err


@pytest.mark.parametrize(("passphrase", "message"), [(None, "is encrypted: set"), ("wrong", "wrong passphrase")])
def test_encrypted_keys_need_the_right_passphrase(tmp_path: Path, passphrase: str | None, message: str) -> None:
    data = str(tmp_path / "hub")
    assert _keys("init", "--data-dir", data, env={PASSPHRASE_ENV: "right"})[0] == 0
    code, out, err = _keys("sign-root", "--data-dir", data, env={PASSPHRASE_ENV: passphrase or ""})
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert _keys("status", "--data-dir", data)[0] == 0  # reading expiry needs no key
    code, out, _ = _keys("sign-root", "--data-dir", data, env={PASSPHRASE_ENV: "right"})
    assert code == 0 and json.loads(out)["root_version"] == 2


def test_commands_on_a_directory_without_a_repository_fail_clearly(tmp_path: Path) -> None:
    for args in (["status"], ["sign-root"], ["export-root", "--out", str(tmp_path / "k.pem")]):
        code, _, err = _keys(*args, "--data-dir", str(tmp_path / "none"))
        assert code == 1 and "no TUF repository in" in err, args


def test_keys_of_an_existing_hub_are_encrypted_and_the_passphrase_changed(tmp_path: Path) -> None:
    data = str(tmp_path / "hub")
    assert _keys("init", "--data-dir", data)[0] == 0  # plaintext, as a hub made before encryption existed
    code, out, err = _keys("passphrase", "--data-dir", data, env={"EDGEFLEET_NEW_KEY_PASSPHRASE": "one"})
    assert code == 0 and json.loads(out) == {"keys": 4, "encrypted": True}, err
    pems = [p.read_bytes() for p in (tmp_path / "hub" / "tuf" / "keys").iterdir()]
    assert all(b"ENCRYPTED PRIVATE KEY" in pem for pem in pems)
    assert "is encrypted" in _keys("sign-root", "--data-dir", data)[2]
    code, _, err = _keys(
        "passphrase", "--data-dir", data, env={PASSPHRASE_ENV: "wrong", "EDGEFLEET_NEW_KEY_PASSPHRASE": "two"}
    )
    assert code == 1 and "wrong passphrase" in err
    assert [p.read_bytes() for p in (tmp_path / "hub" / "tuf" / "keys").iterdir()] == pems  # nothing changed
    env = {PASSPHRASE_ENV: "one", "EDGEFLEET_NEW_KEY_PASSPHRASE": "two"}
    assert _keys("passphrase", "--data-dir", data, env=env)[0] == 0
    assert _keys("sign-root", "--data-dir", data, env={PASSPHRASE_ENV: "two"})[0] == 0
