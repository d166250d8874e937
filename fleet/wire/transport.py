"""The transport seam: hub and agent code talk to this small `Broker` protocol, never to a client library.

Real brokers (Mosquitto, the embedded amqtt broker) are reached through `fleet.wire.mqtt.PahoBroker` in
integration tests and production; `InMemoryBroker` exists only for pure unit tests of handlers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Message:
    """One received MQTT message."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


Handler = Callable[[Message], None]
Unsubscribe = Callable[[], None]


class Broker(Protocol):
    """What EdgeFleet needs from an MQTT connection."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish ``payload``; returns once handed to the connection (queued while offline)."""

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> Unsubscribe:
        """Call ``handler`` for each message matching ``topic_filter``; return a function that unsubscribes."""

    def close(self) -> None:
        """Disconnect and release the connection."""


class Publisher(Protocol):
    """The publishing half of a `Broker` (what a component that only sends needs)."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish ``payload``; returns once handed to the connection."""


@runtime_checkable
class RawSubscriber(Protocol):
    """A broker that can hand messages over on its receiving thread (`fleet.wire.mqtt.PahoBroker`)."""

    def subscribe_raw(self, topic_filter: str, sink: Handler, *, qos: int = 1) -> Unsubscribe:
        """Call ``sink`` on the receiving thread as each matching message arrives; it must only hand it off."""


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching with ``+`` and ``#`` wildcards (shared-subscription prefix stripped)."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    filter_parts = topic_filter.split("/")
    topic_parts = topic.split("/")
    for index, part in enumerate(filter_parts):
        if part == "#":
            return True
        if index >= len(topic_parts) or (part != "+" and part != topic_parts[index]):
            return False
    return len(filter_parts) == len(topic_parts)


class InMemoryBroker:
    """A synchronous in-process broker for unit tests: delivers to matching handlers, keeps retained messages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: list[tuple[str, Handler]] = []
        self._retained: dict[str, bytes] = {}
        self.published: list[Message] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Deliver to every matching subscriber; keep (or with an empty payload, clear) retained messages."""
        message = Message(topic, payload, qos, retain)
        with self._lock:
            self.published.append(message)
            if retain:
                if payload:
                    self._retained[topic] = payload
                else:
                    self._retained.pop(topic, None)
            handlers = [h for f, h in self._handlers if topic_matches(f, topic)]
        for handler in handlers:
            handler(Message(topic, payload, qos, False))

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> Unsubscribe:
        """Register ``handler`` and replay matching retained messages to it."""
        entry = (topic_filter, handler)
        with self._lock:
            self._handlers.append(entry)
            retained = [(t, p) for t, p in self._retained.items() if topic_matches(topic_filter, t)]
        for topic, payload in retained:
            handler(Message(topic, payload, qos, True))

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._handlers:
                    self._handlers.remove(entry)

        return unsubscribe

    def close(self) -> None:
        """Drop all subscriptions."""
        with self._lock:
            self._handlers.clear()
