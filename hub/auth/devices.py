"""`DeviceAuthenticator`: devices on HTTP routes (bundle downloads) log in with HTTP Basic, their device id and
the secret they log in to the broker with, under the same back-off as broker logins (`LoginGuard.check_device`).

Checking a secret costs a scrypt hash (tens of milliseconds, on purpose). A download resumed after a cut or
fetched as many range requests would pay it per request, so a successful check is remembered for ``remember_s``,
keyed by the device, a digest of the secret and the stored hash: a removed device or a changed secret stops
matching at once (the device row is read on every request anyway).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from fleet.wire.topics import DEVICE_ID_PATTERN
from hub.auth.guard import LoginGuard, LoginKind
from hub.errors import DeviceAuthenticationError, NotFoundError, TooManyAttemptsError
from hub.registry import Device, Registry

_REMEMBERED_MAX = 100_000


class DeviceAuthenticator:
    """Checks ``Authorization: Basic base64(device_id:secret)`` against the registry."""

    def __init__(
        self,
        registry: Registry,
        guard: LoginGuard,
        *,
        remember_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.guard = guard
        self.remember_s = remember_s
        self.clock = clock
        self._verified: OrderedDict[tuple[str, bytes, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None, address: str) -> Device:
        """The device the header names, if its secret is right; `DeviceAuthenticationError` (401) or
        `TooManyAttemptsError` (429) otherwise."""
        device_id, secret = _basic_credentials(authorization)
        wait = self.guard.refused_for(LoginKind.DEVICE, address, device_id)
        if wait > 0:
            raise TooManyAttemptsError(f"too many failed logins for {device_id}; retry in {wait:.0f} s", wait)
        try:
            device: Device | None = self.registry.get_device(device_id)
        except NotFoundError:
            device = None
        key = (device_id, hashlib.sha256(secret.encode()).digest(), device.credential_hash if device else "")
        if device is not None and self._remembered(key):
            return device
        verified = self.guard.check_device(
            device_id, address, lambda: self.registry.check_device_secret(device_id, secret)
        )
        if not verified:
            raise DeviceAuthenticationError(f"wrong device id or secret for {device_id}")
        if device is None:  # provisioned between the two reads: check it once more next time
            return self.registry.get_device(device_id)
        with self._lock:
            self._verified[key] = self.clock() + self.remember_s
            self._verified.move_to_end(key)
            while len(self._verified) > _REMEMBERED_MAX:
                self._verified.popitem(last=False)
        return device

    def _remembered(self, key: tuple[str, bytes, str]) -> bool:
        with self._lock:
            until = self._verified.get(key)
            if until is not None and until < self.clock():
                del self._verified[key]
                return False
            return until is not None


def _basic_credentials(authorization: str | None) -> tuple[str, str]:
    """(device id, secret) from an HTTP Basic header, or `DeviceAuthenticationError` saying what is missing."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not value:
        raise DeviceAuthenticationError(
            "this route needs the device's credentials: Authorization: Basic base64(device_id:secret)"
        )
    try:
        device_id, colon, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise DeviceAuthenticationError("the Basic credentials are not base64 of device_id:secret") from None
    if not colon or not secret or not DEVICE_ID_PATTERN.match(device_id):
        raise DeviceAuthenticationError("the Basic credentials are not base64 of device_id:secret")
    return device_id, secret
