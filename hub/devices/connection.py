"""`BrokerConnector`: the one place hub components get a broker connection from.

It knows where the broker is (the embedded one or ``broker_url``) and how the hub logs in (the URL's
credentials, else the hub user with the hub's secret), so every connection the hub opens is made the same way.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from fleet.wire.acl import HUB_USERNAME
from fleet.wire.mqtt import BrokerAddress, PahoBroker, TlsFiles
from fleet.wire.mqtt_bulk import BulkSubscriber

__all__ = ["BrokerConnector"]

#: QoS 1 publishes in flight per hub connection: a wave's thousand retained orders stream out instead of waiting
#: for an acknowledgement every 20 (paho's default); chunk broadcasts pace themselves (`BundleTransfer`).
_HUB_INFLIGHT = 1000


class BrokerConnector:
    """Opens authenticated hub connections to one broker address."""

    def __init__(self, address: BrokerAddress, *, hub_secret: str, failover: Sequence[tuple[str, int]] = ()) -> None:
        if address.username is None:
            address = address.with_credentials(HUB_USERNAME, hub_secret)
        self.address = address
        self.failover = list(failover)

    @classmethod
    def from_url(
        cls, url: str, *, hub_secret: str, tls: TlsFiles | None = None, failover_urls: Sequence[str] = ()
    ) -> BrokerConnector:
        """A connector for ``mqtt(s)://[user:password@]host:port`` (the hub user when no user is given), moving
        to the nodes of ``failover_urls`` in turn when its node is lost."""
        failover = [BrokerAddress.from_url(u, tls=tls) for u in failover_urls]
        return cls(
            BrokerAddress.from_url(url, tls=tls), hub_secret=hub_secret, failover=[(a.host, a.port) for a in failover]
        )

    @property
    def device_address(self) -> BrokerAddress:
        """Where devices connect, without the hub's credentials."""
        return BrokerAddress(self.address.host, self.address.port, tls=self.address.tls)

    def connect(self, role: str, *, on_connect: Callable[[], None] | None = None) -> PahoBroker:
        """A new connection with a unique client id naming its ``role`` (e.g. ``hub``, ``ingest``);
        ``on_connect`` runs on its dispatcher thread each time it is connected and subscribed again."""
        return PahoBroker(
            self.address,
            client_id=f"edgefleet-{role}-{secrets.token_hex(4)}",
            max_inflight=_HUB_INFLIGHT,
            failover=self.failover,
            on_connect=on_connect,
        )

    def subscriber(self, role: str) -> BulkSubscriber:
        """A receive-only connection for one busy subscription (telemetry), made when it subscribes."""
        return BulkSubscriber(
            self.address, client_id=f"edgefleet-{role}-{secrets.token_hex(4)}", failover=self.failover
        )
