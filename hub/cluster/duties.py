"""`LeaderDuties`: what only the leading replica runs, started on election and stopped on deposition.

The leader runs the rollout engine (`RolloutManager`, its outbox writes fenced by the leadership epoch and its
orders refused once it knows it was deposed), signs TUF metadata (`MetadataRefresher`) and broadcasts bundle
chunks. The manager needs every device's state and update events, while each replica only receives its share of
them: on a replica the leader opens a connection of its own with plain (unshared) subscriptions to ``state``,
``events`` and ``fetch``, so it also receives the retained states of the whole fleet when elected, and every
chunk request: chunks are broadcast by the leader alone (`BundleTransfer.handle_chunks`), so the hub's egress
does not grow with its replicas, while every replica answers its share of metadata requests. A single hub feeds
the manager from its one `DeviceTraffic`, after the registry writer, exactly as before replicas existed.

A replica that dies takes the messages it had received but not yet applied with it (a shared subscription hands
each message to one member). States are retained, so the leader also records a device's retained ``done`` state
on its deployment row: an install whose ``done`` event was lost with a dead replica still shows as done.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping

from fleet.wire.messages import DeploymentOrder, DeviceState, FetchRequest, UpdateEvent, UpdateState
from hub.bundles.refresh import MetadataRefresher
from hub.cluster.leadership import FencedError, Leadership
from hub.devices.records import DeviceRecords
from hub.devices.traffic import DeviceTraffic
from hub.registry import Registry
from hub.rollouts.manager import ChunkRetainer, OrderSink, RolloutManager

__all__ = ["FencedOrders", "LeaderDuties"]

log = logging.getLogger(__name__)

_RECORDED_MAX = 200_000


class FencedOrders:
    """An `OrderSink` that refuses to send once its replica no longer leads."""

    def __init__(self, orders: OrderSink, leadership: Leadership) -> None:
        self.orders = orders
        self.leadership = leadership

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
        """Build an order (no side effect, so no fence)."""
        return self.orders.order_for(
            deployment_id,
            bundle_sha256,
            model=model,
            version=version,
            target=target,
            tuf_target=tuf_target,
            allow_downgrade=allow_downgrade,
            shadow=shadow,
        )

    def send_all(self, orders: Mapping[str, DeploymentOrder]) -> None:
        """Send the orders unless deposed."""
        if orders:
            self._check(next(iter(orders)))
            self.orders.send_all(orders)

    def clear(self, device_id: str) -> None:
        """Withdraw the device's order unless deposed."""
        self._check(device_id)
        self.orders.clear(device_id)

    def _check(self, device_id: str) -> None:
        if not self.leadership.is_leader:
            raise FencedError(f"not the leader: no order for {device_id}")


class LeaderDuties:
    """Starts the rollout manager and the metadata refresher on election; stops them on deposition.

    ``on_manager`` is told the running manager (None once deposed), for the REST routes that step it at once.
    """

    def __init__(
        self,
        registry: Registry,
        orders: OrderSink,
        refresher: MetadataRefresher,
        leadership: Leadership,
        *,
        feed: DeviceTraffic,
        own_feed: bool,
        on_manager: Callable[[RolloutManager | None], None] = lambda _manager: None,
        push: Callable[[str, Collection[str]], None] | None = None,
        fetch: Callable[[str, FetchRequest], None] | None = None,
        retainer: ChunkRetainer | None = None,
    ) -> None:
        self.registry = registry
        self.orders = FencedOrders(orders, leadership)
        self.refresher = refresher
        self.leadership = leadership
        self.feed = feed
        self.own_feed = own_feed
        self.on_manager = on_manager
        self.push = push  # the rollout manager's wave push (`BundleTransfer.push`)
        self.fetch = fetch  # chunk and piece requests on the leader's own feed (`BundleTransfer.handle_chunks`)
        self.retainer = retainer  # keeps rollout bundles retained on the broker (`BundleTransfer`)
        self.manager: RolloutManager | None = None
        self._done_records: DeviceRecords | None = None  # retained done states, written in batches
        self._recorded: set[tuple[str, str]] = set()  # (device, deployment) done states already queued
        self._unsubscribes: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def lead(self, epoch: int) -> None:
        """Start the duties (called by the leadership on election)."""
        with self._lock:
            manager = RolloutManager(
                self.registry, self.orders, fence=self.leadership.fence, push=self.push, retainer=self.retainer
            )
            self._unsubscribes = [self.feed.on_state(manager.observe_state), self.feed.on_event(manager.observe_event)]
            if self.own_feed:
                self._done_records = DeviceRecords(self.registry, on_events=lambda _events: None)
                self._done_records.start()
                self._unsubscribes.append(self.feed.on_state(self._record_done))
                if self.fetch is not None:
                    self._unsubscribes.append(self.feed.on_fetch(self.fetch))
            self.refresher.start()  # before devices fetch: metadata gone stale while no one led
            if self.own_feed:
                # chunk requests at QoS 0: a device asks again after its chunk timeout, and on a broker that
                # keeps QoS 1 deliveries in a stream (NATS) the fleet's metadata requests, which this feed
                # only skips, would cost a stored and acknowledged message each
                self.feed.start(
                    channels=("state", "events", "fetch") if self.fetch else ("state", "events"), qos={"fetch": 0}
                )
            manager.start()
            self.manager = manager
            self.on_manager(manager)
        log.info("leading with epoch %d: rollouts and metadata signing", epoch)

    def _record_done(self, state: DeviceState) -> None:
        """Queue a device's retained ``done`` as an event on its deployment row, once per device and deployment
        (a writer thread stores them in batches: one transaction per state held this feed back at thousands)."""
        records = self._done_records
        if records is None or state.update_state != UpdateState.DONE or not state.deployment_id:
            return
        key = (state.device_id, state.deployment_id)
        if key in self._recorded:
            return
        if len(self._recorded) >= _RECORDED_MAX:
            self._recorded.clear()  # bounded; forgetting only costs a repeated, idempotent write
        self._recorded.add(key)
        records.event(UpdateEvent(device_id=state.device_id, deployment_id=state.deployment_id, state=UpdateState.DONE))

    def step_down(self) -> None:
        """Stop the duties; safe to call when not leading."""
        with self._lock:
            manager, self.manager = self.manager, None
            self.on_manager(None)
            if manager is not None:
                manager.stop()
            for unsubscribe in self._unsubscribes:
                unsubscribe()
            self._unsubscribes.clear()
            if self.own_feed:
                self.feed.stop()
            if self._done_records is not None:
                self._done_records.close()
                self._done_records = None
            self.refresher.stop()
