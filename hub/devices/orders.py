"""`DeploymentOrders`: builds deployment orders for stored bundles and publishes them, retained, per device."""

from __future__ import annotations

import math
import time

from fleet.wire import topics
from fleet.wire.messages import DeploymentOrder, encode
from fleet.wire.transport import Broker
from hub.bundles.store import ArtifactStore
from hub.registry import Registry

__all__ = ["DeploymentOrders"]


class DeploymentOrders:
    """The hub's order sink: a device that is offline gets its retained order on reconnect. Each order sent is
    stamped with the device's next sequence (`Registry.next_order_sequence`), so no order can be replayed."""

    def __init__(
        self, broker: Broker, store: ArtifactStore, registry: Registry, *, chunk_size: int = 64 * 1024
    ) -> None:
        self.broker = broker
        self.store = store
        self.registry = registry
        self.chunk_size = chunk_size

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
        )

    def send(self, device_id: str, order: DeploymentOrder) -> None:
        """Publish ``order`` as the device's desired deployment (retained), stamped with its next sequence."""
        stamped = order.model_copy(update={"sequence": self.registry.next_order_sequence(device_id)})
        self.broker.publish(topics.device_topic(device_id, "deployment"), encode(stamped), qos=1, retain=True)

    def clear(self, device_id: str) -> None:
        """Remove the device's retained order, so a reconnecting device is not sent it again."""
        self.broker.publish(topics.device_topic(device_id, "deployment"), b"", qos=1, retain=True)
