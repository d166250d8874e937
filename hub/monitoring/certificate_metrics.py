"""Prometheus gauge of the TLS certificates the hub serves and trusts, read at each scrape (never stale).

Metrics::

    edgefleet_tls_certificate_expiry_seconds   gauge  role, subject   seconds until the certificate expires

Roles are the settings that name a certificate (``embedded_broker``, ``embedded_client_ca``, ``api``,
``broker_ca``, ``hub_client``, ``device_ca``). Alert well ahead (``monitoring/alerts.yml`` warns at 30 days):
renew with ``edgefleet pki renew`` (see docs/security.md). Device certificates renew themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hub.devices.pki import certificate_info
from hub.errors import HubError

__all__ = ["CertificateMetrics"]

log = logging.getLogger(__name__)


class CertificateMetrics(Collector):
    """Collects the expiry of each certificate in ``files`` (role -> PEM file)."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._files = dict(files)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for role, path in self._files.items():
            try:
                info = certificate_info(path)
            except HubError as exc:  # a scrape still answers; the missing series itself alerts
                log.error("reading the %s certificate for /metrics failed: %s", role, exc)
                continue
            family.add_metric([role, info.subject], info.seconds_left())
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "edgefleet_tls_certificate_expiry_seconds",
            "Seconds until the TLS certificate expires (negative: expired).",
            labels=["role", "subject"],
        )
