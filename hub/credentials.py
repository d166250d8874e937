"""Per-device credentials: random secrets, stored only as salted scrypt hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1


def new_secret() -> str:
    """A fresh random device password (URL-safe, 32 bytes of entropy)."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Salted scrypt hash of ``secret`` in a self-describing string."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


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
