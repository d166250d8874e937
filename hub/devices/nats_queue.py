"""`NatsQueueGroups`: hub replicas share device traffic through NATS queue groups where the broker is NATS.

NATS serves MQTT 3.1.1 but not MQTT's shared subscriptions (``$share/GROUP/filter``): on a NATS cluster each
replica would receive every message. NATS has its own equivalent, the queue group: every message on a subject
goes to one member of the group. MQTT publishes travel inside NATS on subjects mapped from their topics
(``/`` becomes ``.``, ``+`` is ``*``, ``#`` is ``>``, and NATS 2.10 turns a ``.`` inside a topic level into
``//``), so a replica subscribes to ``edgefleet.v1.devices.*.telemetry`` in queue group ``GROUP`` with a plain
NATS client and gets its share of the devices' MQTT messages.

This class is a `fleet.wire.transport.Broker` wrapping the hub's MQTT connection: shared filters become queue
subscriptions on the NATS connection, everything else (plain filters, publishes) stays on MQTT, so the hub's
parts are unchanged. Delivery is at most once per group, like a shared subscription: a message a replica
received and had not applied when it died is lost, which the protocol already survives (states are retained,
telemetry is acknowledged only once stored, fetch requests are repeated).

    shared = NatsQueueGroups(mqtt_connection, ["nats://n1:4222", "nats://n2:4222"], name="hub-a")
    DeviceTraffic(shared, registry, shared_group="edgefleet-hub").start()
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, Final

from fleet.wire.mqtt import BrokerConnectionError, TlsFiles
from fleet.wire.transport import Broker, Handler, Message, RawSubscriber, Unsubscribe

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg

__all__ = ["NatsQueueGroups", "mqtt_filter_to_subject", "split_shared", "subject_to_mqtt_topic"]

log = logging.getLogger(__name__)

_STOP: Final = object()
#: messages a subscription may hold before NATS calls this client slow and drops: the callback only queues
_PENDING_MESSAGES: Final = 1_000_000
_PENDING_BYTES: Final = 1024 * 1024 * 1024


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """``$share/GROUP/filter`` as ``(GROUP, filter)``; a plain filter as ``(None, filter)``."""
    if not topic_filter.startswith("$share/"):
        return None, topic_filter
    parts = topic_filter.split("/", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ValueError(f"malformed shared subscription {topic_filter!r}: expected $share/GROUP/filter")
    return parts[1], parts[2]


def mqtt_filter_to_subject(topic_filter: str) -> str:
    """The NATS subject NATS's MQTT gateway uses for an MQTT topic filter made of non-empty levels."""
    levels = topic_filter.split("/")
    if any(not level for level in levels):
        raise ValueError(f"topic filter {topic_filter!r} has an empty level, which this mapping does not cover")
    mapped = {"+": "*", "#": ">"}
    return ".".join(mapped.get(level, level.replace(".", "//")) for level in levels)


def subject_to_mqtt_topic(subject: str) -> str:
    """The MQTT topic of a message NATS delivers on ``subject`` (the inverse of `mqtt_filter_to_subject`)."""
    return "/".join(token.replace("//", ".") for token in subject.split("."))


class NatsQueueGroups:
    """A `Broker`: ``$share/GROUP/...`` subscriptions are NATS queue subscriptions in ``GROUP``; plain
    subscriptions and every publish go to ``mqtt``. Handlers run in arrival order on one dispatcher thread; raw
    sinks (`subscribe_raw`) on the NATS client's own thread. `close` closes the NATS connection only: ``mqtt``
    stays its owner's."""

    def __init__(
        self,
        mqtt: Broker,
        servers: Sequence[str],
        *,
        name: str,
        tls: TlsFiles | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.mqtt = mqtt
        self.servers = list(servers)
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"nats-{name}", daemon=True)
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._dispatcher = threading.Thread(target=self._dispatch, name=f"nats-dispatch-{name}", daemon=True)
        self._closed = False
        self._thread.start()
        self._dispatcher.start()
        self._last_error: Exception | None = None
        try:
            self._client: NatsClient = self._call(self._connect(tls), connect_timeout_s)
        except BrokerConnectionError as exc:
            self._stop_threads()
            reason = self._last_error or exc
            raise BrokerConnectionError(f"cannot connect to NATS at {', '.join(self.servers)}: {reason}") from exc

    # -- Broker ---------------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish on the MQTT connection (retained messages and QoS exist only there)."""
        self.mqtt.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> Unsubscribe:
        """A queue subscription for a shared filter (handler on the dispatcher thread), else MQTT's own."""
        group, plain = split_shared(topic_filter)
        if group is None:
            return self.mqtt.subscribe(topic_filter, handler, qos=qos)
        return self._queue_subscribe(group, plain, lambda message: self._inbox.put((handler, message)))

    def subscribe_raw(self, topic_filter: str, sink: Handler, *, qos: int = 1) -> Unsubscribe:
        """`subscribe`, but ``sink`` runs on the NATS client's thread as each message arrives (it must only hand
        the message off); a plain filter goes to the MQTT connection's raw subscription where it has one."""
        group, plain = split_shared(topic_filter)
        if group is None:
            if isinstance(self.mqtt, RawSubscriber):
                return self.mqtt.subscribe_raw(topic_filter, sink, qos=qos)
            return self.mqtt.subscribe(topic_filter, sink, qos=qos)
        return self._queue_subscribe(group, plain, sink)

    def close(self) -> None:
        """Drain and close the NATS connection and stop its threads; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._client.close(), 10.0)
        except BrokerConnectionError as exc:
            log.warning("closing the NATS connection %s: %s", self.name, exc)
        self._stop_threads()

    # -- internals ------------------------------------------------------------------------------------------

    async def _connect(self, tls: TlsFiles | None) -> NatsClient:
        import nats
        from nats.errors import Error as NatsError

        async def disconnected() -> None:
            if not self._closed:
                log.warning("%s lost its NATS connection; reconnecting", self.name)

        async def reconnected() -> None:
            log.info("%s reconnected to NATS at %s", self.name, client.connected_url)

        async def error(exc: Exception) -> None:
            self._last_error = exc
            log.warning("NATS connection %s: %s", self.name, exc)

        try:
            client: NatsClient = await nats.connect(
                self.servers,
                name=self.name,
                tls=tls.context() if tls is not None else None,
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # forever: a cluster node may be down for long
                reconnect_time_wait=1,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
            )
        except (TimeoutError, OSError, NatsError) as exc:
            raise BrokerConnectionError(str(exc)) from exc
        return client

    def _queue_subscribe(self, group: str, topic_filter: str, deliver: Callable[[Message], None]) -> Unsubscribe:
        subject = mqtt_filter_to_subject(topic_filter)

        async def on_message(msg: Msg) -> None:
            message = Message(subject_to_mqtt_topic(msg.subject), msg.data, qos=1)
            try:
                deliver(message)
            except Exception:  # a bad message must never stop the subscription
                log.exception("NATS sink for %s failed", subject)

        async def subscribe() -> Any:
            sub = await self._client.subscribe(
                subject,
                queue=group,
                cb=on_message,
                pending_msgs_limit=_PENDING_MESSAGES,
                pending_bytes_limit=_PENDING_BYTES,
            )
            await self._client.flush()  # the server has the subscription before this returns
            return sub

        subscription = self._call(subscribe(), 10.0)

        def unsubscribe() -> None:
            if not self._closed:
                self._call(subscription.unsubscribe(), 10.0)

        return unsubscribe

    def _call(self, coroutine: Any, timeout_s: float) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout_s)
        except FutureTimeout as exc:
            future.cancel()
            servers = ", ".join(self.servers)
            raise BrokerConnectionError(f"NATS ({servers}) did not answer in {timeout_s:.0f} s") from exc

    def _dispatch(self) -> None:
        while True:
            item = self._inbox.get()
            if item is _STOP:
                return
            handler, message = item
            try:
                handler(message)
            except Exception:  # a bad message must never kill the dispatcher
                log.exception("handler %s failed on %s", getattr(handler, "__qualname__", handler), message.topic)

    def _stop_threads(self) -> None:
        self._inbox.put(_STOP)
        self._dispatcher.join(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
