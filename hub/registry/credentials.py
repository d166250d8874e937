"""Per-device credentials: random secrets, stored as salted scrypt hashes (REST and embedded broker), as
Mosquitto 2 ``$7$`` PBKDF2-SHA512 hashes (``mosquitto_passwd``'s format, for generated password files) and as
bcrypt hashes (the only hashes NATS checks, for its generated authorization file)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from functools import cache
from typing import Final

from hub.errors import InvalidRequestError

_N, _R, _P = 2**14, 8, 1
PBKDF2_ITERATIONS: Final = 1000  # mosquitto_passwd uses 101; any count in the hash is honoured
#: bcrypt cost of a device secret: 256 random bits need no stretching, and NATS checks the hash on every connect
#: (about 1 ms at cost 4, 150 ms at ``nats server passwd``'s 11: a fleet reconnecting after a node's loss)
DEVICE_BCRYPT_ROUNDS: Final = 4
_SALT_BYTES: Final = 12
_DIGEST_BYTES: Final = 64


def new_secret() -> str:
    """A fresh random device password (URL-safe, 32 bytes of entropy)."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Salted scrypt hash of ``secret`` in a self-describing string."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


@cache
def dummy_hash() -> str:
    """A hash no secret matches, verified against for unknown ids so that they cost what known ones do."""
    return hash_secret(new_secret())


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches the stored hash (constant-time compare)."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p))
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


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


def hash_bcrypt(password: str, *, rounds: int = DEVICE_BCRYPT_ROUNDS) -> str:
    """``password`` as a ``$2b$`` bcrypt hash (what ``nats server passwd`` writes; NATS checks it itself)."""
    import bcrypt

    secret = password.encode()
    if not secret or len(secret) > 72:
        raise InvalidRequestError("a bcrypt password must be 1-72 bytes (NATS checks no other hash)")
    return bcrypt.hashpw(secret, bcrypt.gensalt(rounds)).decode()
