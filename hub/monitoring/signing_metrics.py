"""Prometheus gauges of the hub's signed TUF metadata, read at each scrape (never stale).

Metrics::

    edgefleet_tuf_metadata_expiry_seconds   gauge  role   seconds until the role's metadata expires
    edgefleet_tuf_root_keys_online          gauge         root keys on the hub (0 when kept offline)
    edgefleet_tuf_root_threshold            gauge         signatures a root version needs

Alert on ``edgefleet_tuf_metadata_expiry_seconds{role="root"} < 30 * 86400`` when the root keys are kept
offline: the running hub re-signs every other role itself (see docs/security.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hub.bundles.tuf_repository import TufRepository
from hub.errors import HubError

__all__ = ["SigningMetrics"]

log = logging.getLogger(__name__)


class SigningMetrics(Collector):
    """Collects the expiry of each role and the root keys held, from the repository ``repository()`` returns."""

    def __init__(self, repository: Callable[[], TufRepository]) -> None:
        self._repository = repository

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        expiry, online, threshold = self._families()
        try:
            repository = self._repository()
            for role, seconds in repository.seconds_to_expiry().items():
                expiry.add_metric([role], seconds)
            present, needed = repository.root_keys_on_hub()
            online.add_metric([], present)
            threshold.add_metric([], needed)
        except (HubError, OSError, ValueError) as exc:  # a scrape still answers; the gap itself alerts
            log.error("reading TUF metadata for /metrics failed: %s", exc)
        yield from (expiry, online, threshold)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "edgefleet_tuf_metadata_expiry_seconds",
                "Seconds until the role's signed TUF metadata expires (negative: expired).",
                labels=["role"],
            ),
            GaugeMetricFamily("edgefleet_tuf_root_keys_online", "Root private keys held on the hub."),
            GaugeMetricFamily("edgefleet_tuf_root_threshold", "Root key signatures a root version needs."),
        )
