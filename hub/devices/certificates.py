"""Certificate renewal for devices: a device sends a CSR for a key it made, the hub signs it with the fleet CA.

A device certificate lives 825 days; a device in the field for years renews its own before that (see
`agent.certificates`). The hub answers each request on the device's ``certificate`` topic. A request is
idempotent: the same ``request_id`` gets the same certificate back (a lost reply is simply asked again), and a
device gets at most one new certificate per ``min_interval_s`` so a compromised device cannot mint keys.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fleet.wire import topics
from fleet.wire.messages import CertificateReply, CertificateRequest, encode
from fleet.wire.transport import Broker
from hub.devices.pki import CertificateAuthority
from hub.errors import HubError

__all__ = ["CertificateSigner"]

log = logging.getLogger(__name__)


class CertificateSigner:
    """Signs devices' certificate requests with ``ca`` (None: this hub has no device CA and says so)."""

    def __init__(
        self,
        broker: Broker,
        ca: CertificateAuthority | None,
        *,
        days: int = 825,
        min_interval_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._broker = broker
        self._ca = ca
        self._days = days
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, CertificateReply]] = {}  # device -> (when, its last signed reply)

    def handle(self, request: CertificateRequest) -> None:
        """Answer one request (called with requests whose topic matched their device id)."""
        reply = self._answer(request)
        if reply.error:
            log.warning("certificate request from %s refused: %s", request.device_id, reply.error)
        else:
            log.info("signed a renewed certificate for %s (request %s)", request.device_id, request.request_id)
        self._broker.publish(topics.device_topic(request.device_id, "certificate"), encode(reply), qos=1)

    def _answer(self, request: CertificateRequest) -> CertificateReply:
        def refused(reason: str) -> CertificateReply:
            return CertificateReply(device_id=request.device_id, request_id=request.request_id, error=reason)

        if self._ca is None:
            return refused("this hub has no device CA (set device_ca_dir) and cannot renew certificates")
        with self._lock:
            last = self._last.get(request.device_id)
            if last is not None:
                when, reply = last
                if reply.request_id == request.request_id:
                    return reply
                if self._clock() - when < self._min_interval_s:
                    wait_s = self._min_interval_s - (self._clock() - when)
                    return refused(f"a certificate was issued to this device recently; ask again in {wait_s:.0f} s")
            try:
                cert = self._ca.sign_request(request.csr_pem.encode(), request.device_id, days=self._days)
            except HubError as exc:
                return refused(str(exc))
            reply = CertificateReply(device_id=request.device_id, request_id=request.request_id, cert_pem=cert.decode())
            self._last[request.device_id] = (self._clock(), reply)
            return reply
