"""`DeploymentOrders`: builds deployment orders for stored bundles and publishes them, retained, per device.

Every order carries the hub-wide `BundleSources` (``bundle_transport``, ``bundle_mirrors``, the hub's
``/bundles`` URL): the transport suits the site's network and whether a CDN exists, not one rollout, and
setting it where orders are built covers plain deployments, rollout waves and roll-backs alike.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fleet.wire import topics
from fleet.wire.messages import DeploymentOrder, encode
from fleet.wire.transport import Broker
from hub.bundles.store import ArtifactStore
from hub.errors import NotFoundError
from hub.registry import Registry

__all__ = ["BundleSources", "DeploymentOrders"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleSources:
    """How devices download bundles: over the broker, or over HTTP from ``mirrors`` in order, then ``hub_url``."""

    transport: Literal["mqtt", "http"] = "mqtt"
    mirrors: tuple[str, ...] = ()
    hub_url: str | None = None

    def order_fields(self) -> dict[str, Any]:
        """The order's transport fields (none for MQTT, whose orders stay as they were)."""
        if self.transport == "mqtt":
            return {}
        return {"transport": "http", "mirrors": list(self.mirrors), "hub_url": self.hub_url}


class DeploymentOrders:
    """The hub's order sink: a device that is offline gets its retained order on reconnect. Each order sent is
    stamped with the device's next sequence (`Registry.next_order_sequences`), so no order can be replayed."""

    def __init__(
        self,
        broker: Broker,
        store: ArtifactStore,
        registry: Registry,
        *,
        chunk_size: int = 64 * 1024,
        sources: BundleSources | None = None,
    ) -> None:
        self.broker = broker
        self.store = store
        self.registry = registry
        self.chunk_size = chunk_size
        self.sources = sources or BundleSources()

    def order_for(
        self,
        deployment_id: str,
        bundle_sha256: str,
        *,
        model: str,
        version: str,
        target: str,
        tuf_target: str,
        allow_downgrade: bool = False,
        shadow: bool = False,
    ) -> DeploymentOrder:
        """Build a deployment order for a stored bundle."""
        size = self.store.size(bundle_sha256)
        return DeploymentOrder(
            deployment_id=deployment_id,
            model=model,
            version=version,
            target=target,
            tuf_target=tuf_target,
            sha256=bundle_sha256,
            size_bytes=size,
            chunk_size=self.chunk_size,
            chunk_count=max(1, math.ceil(size / self.chunk_size)),
            allow_downgrade=allow_downgrade,
            shadow=shadow,
            issued_at=time.time(),
            **self.sources.order_fields(),
        )

    def send(self, device_id: str, order: DeploymentOrder) -> None:
        """Publish ``order`` as the device's desired deployment (retained), stamped with its next sequence."""
        self.send_all({device_id: order})

    def send_all(self, orders: Mapping[str, DeploymentOrder]) -> None:
        """Publish each device's order, their sequences reserved in one transaction (a whole wave at once);
        `NotFoundError` names the devices that no longer exist, after the others were sent."""
        began = time.perf_counter()
        sequences = self.registry.next_order_sequences(orders)
        reserved = time.perf_counter()
        for device_id, order in orders.items():
            if device_id in sequences:
                stamped = order.model_copy(update={"sequence": sequences[device_id]})
                self.broker.publish(topics.device_topic(device_id, "deployment"), encode(stamped), qos=1, retain=True)
        log.info(
            "published %d orders in %.2f s (sequences reserved in %.2f s)",
            len(sequences),
            time.perf_counter() - began,
            reserved - began,
        )
        missing = sorted(set(orders) - sequences.keys())
        if missing:
            raise NotFoundError(f"no order for devices that do not exist: {', '.join(missing)}")

    def clear(self, device_id: str) -> None:
        """Remove the device's retained order, so a reconnecting device is not sent it again."""
        self.broker.publish(topics.device_topic(device_id, "deployment"), b"", qos=1, retain=True)
