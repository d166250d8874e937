"""Mosquitto password and ACL files generated from the device inventory.

Each device may reach only its own topics and the read-only fleet topics, the hub reaches the whole
protocol tree; the rules themselves live in `fleet.acl` (the embedded broker enforces the same ones), this
module only renders them in Mosquitto's formats::

    users = [hub_user(hub_password), *(device_user(d, pw) for d, pw in inventory)]
    files = write_broker_auth(Path("/etc/mosquitto/edgefleet"), users)
    Path("/etc/mosquitto/conf.d/edgefleet.conf").write_text(mosquitto_config(files, port=1883))
    # then SIGHUP mosquitto: it re-reads both files without dropping connections

Passwords are stored the way ``mosquitto_passwd`` (Mosquitto 2) stores them: ``$7$`` = PBKDF2-HMAC-SHA512
with a 12-byte salt, ``$7$<iterations>$<base64 salt>$<base64 digest>``. The registry can keep
`hash_password`'s output for each device (it cannot be derived from the scrypt hash it keeps for REST auth),
so the password file can be regenerated without knowing any device's secret.

Invalid usernames, empty passwords and duplicate or clashing users raise `hub.errors.InvalidRequestError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from fleet.acl import HUB_USERNAME, Rule, device_rules, hub_rules
from fleet.errors import ProtocolError
from hub.errors import InvalidRequestError

PBKDF2_ITERATIONS: Final = 1000  # mosquitto_passwd uses 101; any count in the hash is honoured
_SALT_BYTES: Final = 12
_DIGEST_BYTES: Final = 64
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

Role = Literal["device", "hub"]


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """Hash ``password`` in Mosquitto 2's ``$7$`` (PBKDF2-SHA512) password-file format."""
    if not password:
        raise InvalidRequestError("empty broker password")
    if iterations < 1:
        raise InvalidRequestError("PBKDF2 iterations must be positive")
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _DIGEST_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (ours or ``mosquitto_passwd``'s); constant-time compare."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error):
        return False
    if iterations < 1 or not expected:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(expected))
    return hmac.compare_digest(digest, expected)


@dataclass(frozen=True, slots=True)
class BrokerUser:
    """One broker login: the device id (or the hub's username), its ``$7$`` hash and its role."""

    username: str
    password_hash: str
    role: Role = "device"

    def rules(self) -> tuple[Rule, ...]:
        """The topic rules this user gets, from `fleet.acl`."""
        return hub_rules() if self.role == "hub" else device_rules(self.username)


def device_user(device_id: str, password: str) -> BrokerUser:
    """A device login from its id and plaintext secret (hashed here; the secret is not kept)."""
    return BrokerUser(username=device_id, password_hash=hash_password(password), role="device")


def hub_user(password: str, username: str = HUB_USERNAME) -> BrokerUser:
    """The hub's login: read and write on the whole protocol tree."""
    return BrokerUser(username=username, password_hash=hash_password(password), role="hub")


def _checked(users: Iterable[BrokerUser]) -> list[BrokerUser]:
    """Validate names and hashes; refuse duplicates and devices posing as a hub login."""
    checked: list[BrokerUser] = []
    seen: set[str] = set()
    hubs = set()
    for user in users:
        if not _USERNAME.match(user.username):
            raise InvalidRequestError(
                f"invalid broker username {user.username!r}: use 1-63 letters, digits, '.', '_' or '-'"
            )
        if user.username in seen:
            raise InvalidRequestError(f"broker user {user.username!r} is listed twice")
        if not user.password_hash.startswith("$7$") or user.password_hash.count("$") != 4:
            raise InvalidRequestError(f"broker user {user.username!r} has no $7$ password hash")
        if user.role == "hub":
            hubs.add(user.username)
        seen.add(user.username)
        checked.append(user)
    clash = {u.username for u in checked if u.role == "device"} & (hubs | {HUB_USERNAME})
    if clash:
        raise InvalidRequestError(f"device id(s) {sorted(clash)} clash with the hub's broker username")
    return sorted(checked, key=lambda u: (u.role != "hub", u.username))


def render_password_file(users: Iterable[BrokerUser]) -> str:
    """The ``password_file`` text: one ``username:$7$...`` line per user."""
    return "".join(f"{u.username}:{u.password_hash}\n" for u in _checked(users))


def _acl_lines(user: BrokerUser) -> list[str]:
    try:
        rules = user.rules()
    except ProtocolError as exc:
        raise InvalidRequestError(f"cannot build broker rules for {user.username!r}: {exc}") from exc
    access: dict[str, set[str]] = {}
    for rule in rules:
        access.setdefault(rule.pattern, set()).add(rule.access)
    lines = []
    for pattern, kinds in access.items():
        mode = "readwrite" if kinds == {"read", "write"} else next(iter(kinds))
        lines.append(f"topic {mode} {pattern}")
    return lines


def render_acl(users: Iterable[BrokerUser]) -> str:
    """The ``acl_file`` text: one ``user`` block per login with its `fleet.acl` rules, nothing else."""
    out = ["# Generated by EdgeFleet from the device inventory (hub.broker_acl); do not edit.", ""]
    for user in _checked(users):
        out.append(f"user {user.username}")
        out += _acl_lines(user)
        out.append("")
    return "\n".join(out)


@dataclass(frozen=True, slots=True)
class BrokerAuthFiles:
    """Where `write_broker_auth` put the two files."""

    password_file: Path
    acl_file: Path


def _write_atomically(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_broker_auth(directory: Path, users: Iterable[BrokerUser], *, mode: int = 0o640) -> BrokerAuthFiles:
    """Write ``passwd`` and ``acl`` into ``directory`` atomically (a reloading broker never sees half a file).

    ``mode`` applies to both; the broker's user (or group) must be able to read them after it drops root.
    """
    listed = _checked(users)
    directory.mkdir(parents=True, exist_ok=True)
    files = BrokerAuthFiles(password_file=directory / "passwd", acl_file=directory / "acl")
    _write_atomically(files.password_file, render_password_file(listed), mode)
    _write_atomically(files.acl_file, render_acl(listed), mode)
    return files


def mosquitto_config(files: BrokerAuthFiles, *, port: int = 1883, host: str = "127.0.0.1") -> str:
    """A minimal Mosquitto 2 configuration: one listener, no anonymous clients, these files."""
    return "\n".join(
        [
            f"listener {port} {host}",
            "allow_anonymous false",
            f"password_file {files.password_file}",
            f"acl_file {files.acl_file}",
            "",
        ]
    )


__all__ = [
    "PBKDF2_ITERATIONS",
    "BrokerAuthFiles",
    "BrokerUser",
    "device_user",
    "hash_password",
    "hub_user",
    "mosquitto_config",
    "render_acl",
    "render_password_file",
    "verify_password",
    "write_broker_auth",
]
