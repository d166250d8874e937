"""A recording paho client for broker access tests: every wait is an Event with a timeout, no sleeps."""

from __future__ import annotations

import queue
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

WAIT_S = 10.0


@dataclass
class Client:
    """A paho 2.x client that records what it receives; every wait is an Event with a timeout."""

    username: str
    password: str
    port: int
    inbox: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)
    connected: threading.Event = field(default_factory=threading.Event)
    refused: threading.Event = field(default_factory=threading.Event)
    subscribed: dict[int, threading.Event] = field(default_factory=dict)
    client_id: str | None = None  # default: the username (a device's id is its login)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        import paho.mqtt.client as mqtt

        self.reason = ""
        self.client_id_used = self.client_id or (
            f"{self.username}-{uuid.uuid4().hex[:6]}" if self.username.startswith("edgefleet-") else self.username
        )
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id_used,
            protocol=mqtt.MQTTv311,
        )
        self.client.username_pw_set(self.username, self.password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, msg: self.inbox.put((msg.topic, bytes(msg.payload)))
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = lambda *args: self.disconnected.set()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.reason = str(reason)
        (self.refused if getattr(reason, "is_failure", False) else self.connected).set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self.subscribed.setdefault(mid, threading.Event()).set()

    def connect(self) -> Client:
        self.start()
        assert self.connected.wait(WAIT_S), f"{self.username} could not connect: {self.reason}"
        return self

    def start(self) -> Client:
        """Begin connecting; `connected` or `refused` is set once the broker answers."""
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        return self

    def subscribe(self, topic: str) -> None:
        result, mid = self.client.subscribe(topic, qos=1)
        assert result == 0 and mid is not None
        event = self.subscribed.setdefault(mid, threading.Event())
        assert event.wait(WAIT_S), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)

    def receive_until(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Everything received up to and including ``(topic, payload)``; fails if it never comes."""
        seen: list[tuple[str, bytes]] = []
        while True:
            try:
                message = self.inbox.get(timeout=WAIT_S)
            except queue.Empty:
                raise AssertionError(f"{self.username} never received {payload!r} on {topic}; got {seen}") from None
            seen.append(message)
            if message == (topic, payload):
                return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
