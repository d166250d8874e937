"""`LoginGuard`: failure back-off per identity and per client address, and the failed-login counter, shared by
device broker logins and API tokens.

A key that is backed off is refused at once, without hashing: a guessing client cannot spend the hub's CPU, and
refusals do not count as new failures, so one address cannot keep another device locked out for long. Successes
clear the identity's failures, never the address's (a valid low-privilege token must not buy more guesses).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field

from hub.auth.backoff import BackoffPolicy, FailureBackoff


class LoginKind(StrEnum):
    """What tried to log in."""

    DEVICE = "device"  # a broker login with a device id and secret
    API = "api"  # a REST request with a bearer token


class LoginBackoffSettings(BaseModel):
    """Back-off policies for failed logins. Per address is looser: many devices may share one NAT address."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    per_identity: BackoffPolicy = Field(default_factory=BackoffPolicy)
    per_address: BackoffPolicy = Field(default_factory=lambda: BackoffPolicy(free_failures=20))


class LoginGuard:
    """Decides whether a login may be checked now, and records how it ended."""

    def __init__(
        self,
        settings: LoginBackoffSettings | None = None,
        *,
        prometheus: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        settings = settings or LoginBackoffSettings()
        self.by_identity = FailureBackoff(settings.per_identity, clock)
        self.by_address = FailureBackoff(settings.per_address, clock)
        self.failures = Counter(
            "edgefleet_login_failures",
            "Failed logins by kind (device: broker login, api: bearer token) and reason",
            ["kind", "reason"],
            registry=prometheus,
        )

    def refused_for(self, kind: LoginKind, address: str, identity: str | None = None) -> float:
        """Seconds this login is refused for without checking (0: check it); counts a refusal as ``backed_off``."""
        wait = self.by_address.retry_after(f"{kind}@{address}")
        if identity is not None:
            wait = max(wait, self.by_identity.retry_after(f"{kind}:{identity}"))
        if wait > 0:
            self.failures.labels(kind.value, "backed_off").inc()
        return wait

    def failed(self, kind: LoginKind, reason: str, address: str, identity: str | None = None) -> None:
        """Count a failed check against the address (and the identity, when it names one)."""
        self.failures.labels(kind.value, reason).inc()
        self.by_address.failed(f"{kind}@{address}")
        if identity is not None:
            self.by_identity.failed(f"{kind}:{identity}")

    def succeeded(self, kind: LoginKind, identity: str) -> None:
        """Clear the identity's failures."""
        self.by_identity.succeeded(f"{kind}:{identity}")

    def check_device(self, device_id: str, address: str, verify: Callable[[], bool]) -> bool:
        """Run ``verify`` (the costly hash check) unless backed off; record the outcome."""
        if self.refused_for(LoginKind.DEVICE, address, device_id) > 0:
            return False
        if verify():
            self.succeeded(LoginKind.DEVICE, device_id)
            return True
        self.failed(LoginKind.DEVICE, "bad_credentials", address, device_id)
        return False
