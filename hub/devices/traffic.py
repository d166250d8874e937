"""`DeviceTraffic`: the one decoder of device topics, handing typed messages to the hub's other parts.

It subscribes once per channel on one broker connection, decodes each payload, checks that the sender is
provisioned and that the message names the device whose topic it came on, then calls the listeners of that
kind in the order they were added. Listeners are called on the connection's single dispatcher thread, in the
order messages arrived, so a device's failed update event is always seen before the state that follows it
(the rollout engine relies on that). A message that fails a check is counted in ``rejected`` by channel and
handed to the ``on_rejected`` listeners; no listener sees it.

Telemetry is the exception when an ``on_telemetry_payload`` listener is added (before `start`): the raw
message is handed to it untouched, on the connection's receiving thread where the broker offers that
(`fleet.wire.transport.RawSubscriber`; a ``telemetry_source`` such as `fleet.wire.mqtt_bulk.BulkSubscriber`
then carries telemetry on a connection of its own), and the listener's own thread decodes whole blocks with
`decode_telemetry_block` (same checks, same rejection counting, one database query for the senders it has not
seen yet), so decoding thousands of batches a second never holds up the dispatcher.

    traffic = DeviceTraffic(broker, registry)
    traffic.on_state(registry_writer)          # registered first, called first
    traffic.on_event(rollouts.observe_event)
    traffic.start()
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.fast_telemetry import FastTelemetryBatch
from fleet.wire.fast_telemetry import decode_telemetry as decode_fast
from fleet.wire.messages import (
    CaptureBatch,
    CertificateRequest,
    DeviceState,
    FetchRequest,
    Heartbeat,
    TelemetryBatch,
    UpdateEvent,
    WireModel,
    decode,
)
from fleet.wire.transport import Broker, Message, RawSubscriber, Unsubscribe
from hub.devices.known_devices import KnownDevices
from hub.errors import HubError
from hub.registry import Registry

if TYPE_CHECKING:
    from fleet.wire.mqtt_bulk import BulkSubscriber

__all__ = ["EVERY_CHANNEL", "DeviceTraffic", "Listener", "RejectListener"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=WireModel)
Listener = Callable[[M], None]
RejectListener = Callable[[str, Exception], None]

_TELEMETRY_PREFIX: Final = f"{topics.ROOT}/devices/"
_DISPATCH_BLOCK: Final = 1000  # messages taken at once by the device channels' dispatcher
#: channel -> (payload type, attribute naming the device inside the payload, or None)
_CHANNELS: dict[str, tuple[type[WireModel], str | None]] = {
    "state": (DeviceState, "device_id"),
    "events": (UpdateEvent, "device_id"),
    "fetch": (FetchRequest, None),
    "telemetry": (TelemetryBatch, "device_id"),
    "heartbeat": (Heartbeat, "device_id"),
    "capture": (CaptureBatch, "device_id"),
    "certificate-request": (CertificateRequest, "device_id"),
}


#: Every channel the hub consumes, as `DeviceTraffic.start` subscribes them by default.
EVERY_CHANNEL = ("telemetry", "state", "events", "fetch", "heartbeat", "capture", "certificate-request")


class DeviceTraffic:
    """Decodes device state, update events, fetch requests and telemetry; dispatches them typed.

    ``telemetry_filter`` may be a ``$share/GROUP/...`` shared subscription that splits telemetry among hub
    workers; ``start(telemetry_only=True)`` subscribes to telemetry alone (a telemetry worker). With
    ``shared_group`` every channel is consumed through ``$share/GROUP/...``, so each message reaches one hub
    replica of the group (retained states are then not delivered at subscription: the broker keeps them for
    plain subscribers only). Decoders of one hub on several connections share ``known`` (`KnownDevices`), the
    registry's remembered answers on which senders are provisioned. ``telemetry_source``, when given,
    receives the raw telemetry instead of ``broker`` (its unsubscribe function closes it); ``device_source``
    (a `BulkSubscriber`) likewise receives every other channel, on one connection in the broker's order, and
    a dispatcher thread of this decoder runs their handlers (paho's per-message work was most of a hub's CPU
    in a rollout).
    """

    def __init__(
        self,
        broker: Broker,
        registry: Registry,
        *,
        telemetry_filter: str | None = None,
        shared_group: str | None = None,
        known: KnownDevices | None = None,
        telemetry_source: RawSubscriber | None = None,
        device_source: BulkSubscriber | None = None,
    ) -> None:
        self.broker = broker
        self.telemetry_source = telemetry_source
        self.device_source = device_source
        self._dispatcher: _Dispatcher | None = None
        self.registry = registry
        self.shared_group = shared_group
        self.telemetry_filter = telemetry_filter or self._filter("telemetry")
        self.rejected: Counter[str] = Counter()
        self._listeners: dict[str, list[Callable[..., None]]] = {channel: [] for channel in _CHANNELS}
        self._reject_listeners: list[RejectListener] = []
        self._raw_telemetry: list[Callable[[Message], None]] = []
        self._rejected_lock = threading.Lock()
        self.known = known if known is not None else KnownDevices(registry)
        self._unsubscribes: list[Unsubscribe] = []

    # -- listeners ------------------------------------------------------------------------------------------

    def on_state(self, listener: Listener[DeviceState]) -> Unsubscribe:
        """Call ``listener`` with every valid device state (retained states arrive at subscription)."""
        return self._add("state", listener)

    def on_event(self, listener: Listener[UpdateEvent]) -> Unsubscribe:
        """Call ``listener`` with every valid update event."""
        return self._add("events", listener)

    def on_fetch(self, listener: Callable[[str, FetchRequest], None]) -> Unsubscribe:
        """Call ``listener(device_id, request)`` for every valid fetch request (metadata or chunks)."""
        return self._add("fetch", listener)

    def on_telemetry(self, listener: Listener[TelemetryBatch]) -> Unsubscribe:
        """Call ``listener`` with every telemetry batch that decoded and names its sender."""
        return self._add("telemetry", listener)

    def on_telemetry_payload(self, listener: Callable[[Message], None]) -> Unsubscribe:
        """Hand every raw telemetry message to ``listener`` undecoded (add it before `start`); it decodes them
        later with `decode_telemetry_block`, on a thread of its own. It may be called on the connection's
        receiving thread, so it must only queue the message. Typed ``on_telemetry`` listeners are then not
        called."""
        self._raw_telemetry.append(listener)
        return lambda: self._raw_telemetry.remove(listener)

    def decode_telemetry(self, message: Message) -> TelemetryBatch:
        """Decode a raw telemetry message and check its sender (thread-safe); a message that fails is
        counted and handed to the ``on_rejected`` listeners before the `ProtocolError` or `HubError` is raised."""
        try:
            _, batch = self._decode("telemetry", message)
        except (ProtocolError, HubError) as exc:
            self._reject("telemetry", exc)
            raise
        return batch

    def decode_telemetry_block(self, messages: Sequence[Message]) -> list[FastTelemetryBatch | TelemetryBatch | None]:
        """`decode_telemetry` for many raw messages (thread-safe): the decoded batch of each, or None where it
        refused the message (counted and handed to the ``on_rejected`` listeners, with the same reason).

        Payloads go through the fast decoder (`fleet.wire.fast_telemetry`); one that it does not clear, names
        another device than its topic, or comes from a device not known provisioned takes the path of
        `decode_telemetry`, which refuses it or returns the pydantic message (not yet validated)."""
        fast = [decode_fast(m.payload) for m in messages]
        clean = [
            b is not None and m.topic == f"{_TELEMETRY_PREFIX}{b.device_id}/telemetry"
            for b, m in zip(fast, messages, strict=True)
        ]
        senders = {b.device_id for b, ok in zip(fast, clean, strict=True) if ok and b is not None}
        unknown = senders - self.known.provisioned(senders)
        out: list[FastTelemetryBatch | TelemetryBatch | None] = []
        for batch, ok, message in zip(fast, clean, messages, strict=True):
            if ok and batch is not None and batch.device_id not in unknown:
                out.append(batch)
                continue
            try:
                out.append(self.decode_telemetry(message))
            except (ProtocolError, HubError):  # counted by decode_telemetry
                out.append(None)
        return out

    def on_heartbeat(self, listener: Listener[Heartbeat]) -> Unsubscribe:
        """Call ``listener`` with every valid heartbeat."""
        return self._add("heartbeat", listener)

    def on_capture(self, listener: Listener[CaptureBatch]) -> Unsubscribe:
        """Call ``listener`` with every capture message (sampled inputs) that decoded and names its sender."""
        return self._add("capture", listener)

    def on_certificate_request(self, listener: Listener[CertificateRequest]) -> Unsubscribe:
        """Call ``listener`` with each device's request to renew its TLS certificate."""
        return self._add("certificate-request", listener)

    def on_rejected(self, listener: RejectListener) -> Unsubscribe:
        """Call ``listener(channel, error)`` for every message refused here or by a listener."""
        self._reject_listeners.append(listener)
        return lambda: self._reject_listeners.remove(listener)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(
        self,
        *,
        telemetry_only: bool = False,
        channels: tuple[str, ...] | None = None,
        qos: Mapping[str, int] | None = None,
    ) -> None:
        """Subscribe to the device channels the hub consumes (all, telemetry alone, or ``channels``), at QoS 1
        unless ``qos`` names another for a channel."""
        if channels is None:
            channels = ("telemetry",) if telemetry_only else EVERY_CHANNEL
        filters = {c: self.telemetry_filter if c == "telemetry" else self._filter(c) for c in channels}
        levels = {c: (qos or {}).get(c, 1) for c in channels}
        if self.device_source is not None and any(c != "telemetry" for c in filters):
            # one bulk connection for every other channel: one parse per socket read, one dispatcher thread,
            # and the broker's order across channels (a device's failed event before the state that follows)
            read = {c: f for c, f in filters.items() if c != "telemetry"}
            handlers = {c: self._handler(c) for c in read}
            self._dispatcher = _Dispatcher(handlers, before_block=self._ask_about_senders)
            self._unsubscribes.append(
                self.device_source.subscribe_raw_all({f: levels[c] for c, f in read.items()}, self._dispatcher.put)
            )
            self._unsubscribes.append(self._dispatcher.stop)
            filters = {c: f for c, f in filters.items() if c == "telemetry"}
        for channel, topic_filter in filters.items():
            raw = self.telemetry_source or (self.broker if isinstance(self.broker, RawSubscriber) else None)
            if channel == "telemetry" and self._raw_telemetry and raw is not None:
                # raw hand-offs only queue: on the receiving thread, one thread hop fewer per batch
                self._unsubscribes.append(raw.subscribe_raw(topic_filter, self._handler(channel)))
            else:
                self._unsubscribes.append(
                    self.broker.subscribe(topic_filter, self._handler(channel), qos=levels[channel])
                )

    def stop(self) -> None:
        """Unsubscribe everything; safe to call twice."""
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes.clear()

    # -- decoding -------------------------------------------------------------------------------------------

    def _filter(self, channel: str) -> str:
        plain = topics.device_wildcard(channel)
        return f"$share/{self.shared_group}/{plain}" if self.shared_group else plain

    def _add(self, channel: str, listener: Callable[..., None]) -> Unsubscribe:
        self._listeners[channel].append(listener)
        return lambda: self._listeners[channel].remove(listener)

    def _handler(self, channel: str) -> Callable[[Message], None]:
        def handle(message: Message) -> None:
            if channel == "state" and not message.payload:
                return  # a cleared retained state
            if channel == "telemetry" and self._raw_telemetry:
                for raw_listener in list(self._raw_telemetry):
                    raw_listener(message)
                return
            try:
                device_id, message_type = self._decode(channel, message)
                for listener in list(self._listeners[channel]):
                    if channel == "fetch":
                        listener(device_id, message_type)
                    else:
                        listener(message_type)
            except (ProtocolError, HubError) as exc:
                self._reject(channel, exc)

        return handle

    def _reject(self, channel: str, exc: Exception) -> None:
        with self._rejected_lock:
            self.rejected[channel] += 1
        log.warning("rejected %s message: %s", channel, exc)
        for reject in list(self._reject_listeners):
            reject(channel, exc)

    def _decode(self, channel: str, message: Message) -> tuple[str, Any]:
        device_id, _ = topics.parse_device_topic(message.topic)
        payload_type, device_field = _CHANNELS[channel]
        decoded = decode(payload_type, message.payload, topic=message.topic)
        if device_field is not None and getattr(decoded, device_field) != device_id:
            raise ProtocolError(
                f"{channel} names device {getattr(decoded, device_field)} but came on the topic of {device_id}",
                topic=message.topic,
            )
        self._require_known(device_id, message.topic)
        return device_id, decoded

    def _ask_about_senders(self, messages: Sequence[Message]) -> None:
        """Ask the registry about a block's senders in one query (a fleet connecting at once sends thousands of
        first messages: one query per device held the channels back)."""
        senders = set()
        for message in messages:
            with contextlib.suppress(ProtocolError):
                senders.add(topics.parse_device_topic(message.topic)[0])
        if len(senders) > 1:
            self.known.provisioned(senders)

    def _require_known(self, device_id: str, topic: str) -> None:
        """Accept data only from provisioned devices (another hub may share the broker; a removed device)."""
        if not self.known.is_provisioned(device_id):
            raise ProtocolError(f"message from unprovisioned device {device_id}", topic=topic)


class _Dispatcher:
    """Runs each device channel's handler, in arrival order, on a thread of its own (a bulk connection's sink
    only queues). What has queued up is taken as a block, shown to ``before_block`` first."""

    def __init__(
        self,
        handlers: dict[str, Callable[[Message], None]],
        *,
        before_block: Callable[[Sequence[Message]], None] = lambda _block: None,
    ) -> None:
        self.handlers = handlers
        self.before_block = before_block
        self._inbox: queue.Queue[Message | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="edgefleet-device-dispatch", daemon=True)
        self._thread.start()

    def put(self, message: Message) -> None:
        """Queue a message (on the connection's thread)."""
        self._inbox.put(message)

    def stop(self) -> None:
        """Handle what is queued, then stop."""
        self._inbox.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            block = [self._inbox.get()]
            while block[-1] is not None and len(block) < _DISPATCH_BLOCK:
                try:
                    block.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            messages = [m for m in block if m is not None]
            try:
                self.before_block(messages)
            except Exception:  # each message still gets its own answer below
                log.exception("preparing a block of %d device messages failed", len(messages))
            for message in messages:
                self._handle(message)
            if block[-1] is None:
                return

    def _handle(self, message: Message) -> None:
        handler = self.handlers.get(message.topic.rsplit("/", 1)[-1])
        if handler is None:
            return
        try:
            handler(message)
        except Exception:  # a bad message must never stop the device channels
            log.exception("device message on %s failed", message.topic)
