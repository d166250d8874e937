"""`BrokerLink`: the agent's broker connection, usable before the broker is reachable.

A device serves its installed model whether or not its hub is up. The link connects in the background,
waiting a jittered exponential backoff (`fleet.wire.backoff.Backoff`) between attempts, forever; subscriptions made
before the first connection are kept and made on it once it is up. From then on paho reconnects by itself,
restores the subscriptions and the link calls ``on_online`` again after each reconnect.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fleet.errors import FleetError
from fleet.wire.backoff import Backoff
from fleet.wire.mqtt import BrokerConnectionError, PahoBroker
from fleet.wire.transport import Handler, Unsubscribe

log = logging.getLogger(__name__)

Connect = Callable[[Callable[[], None]], PahoBroker]
"""Makes one connection attempt, raising `BrokerConnectionError` with the reason when it fails; the argument is
the hook the connection calls each time it is ready (after the first time: after each reconnect)."""

_CLOSED = object()


@dataclass
class _Pending:
    topic_filter: str
    handler: Handler
    qos: int
    unsubscribe: Unsubscribe | None = None


class BrokerLink:
    """A `fleet.wire.transport.Broker` that connects in the background; ``start()`` returns at once."""

    def __init__(
        self,
        connect: Connect,
        *,
        on_online: Callable[[], None],
        backoff: Backoff,
        attempt_timeout_s: float,
        where: str,
    ) -> None:
        self._connect = connect
        self._on_online = on_online
        self._backoff = backoff
        self._attempt_timeout_s = attempt_timeout_s
        self._where = where
        self._lock = threading.Lock()
        self._attached = threading.Condition(self._lock)
        self._signals: queue.Queue[object] = queue.Queue()
        self._broker: PahoBroker | None = None
        self._broker_attempt = 0
        self._pending: list[_Pending] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"{where}-link", daemon=True)
        self.attempts = 0

    @property
    def broker(self) -> PahoBroker | None:
        """The connection once it was established the first time (paho keeps it up from then on)."""
        return self._broker

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up now."""
        broker = self._broker
        return broker is not None and broker.connected

    def start(self) -> None:
        """Start connecting in the background."""
        self._thread.start()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the connection is up, ``timeout_s`` passed or the link closed; return whether it is up."""
        deadline = time.monotonic() + timeout_s
        with self._attached:
            self._attached.wait_for(lambda: self._broker is not None or self._closed, timeout_s)
            broker = self._broker
        return broker is not None and broker.wait_connected(max(0.0, deadline - time.monotonic()))

    def wait_first_connection(self) -> bool:
        """Block until the first connection is up (True) or the link is closed (False)."""
        with self._attached:
            self._attached.wait_for(lambda: self._broker is not None or self._closed)
            return self._broker is not None

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish now, or queued by paho while reconnecting; refused before the first connection."""
        broker = self._broker
        if broker is None:
            raise BrokerConnectionError(f"not connected to the broker at {self._where} yet")
        broker.publish(topic, payload, qos=qos, retain=retain)

    def publish_and_wait(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout_s: float = 10.0
    ) -> bool:
        """Publish and wait for the broker's acknowledgement; False when not connected yet or not acknowledged."""
        broker = self._broker
        if broker is None:
            return False
        return broker.publish_and_wait(topic, payload, qos=qos, retain=retain, timeout_s=timeout_s)

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> Unsubscribe:
        """Subscribe now, or as soon as the first connection is up; return the function that unsubscribes."""
        pending = _Pending(topic_filter, handler, qos)
        with self._lock:
            if self._broker is not None:
                return self._broker.subscribe(topic_filter, handler, qos=qos)
            self._pending.append(pending)

        def unsubscribe() -> None:
            with self._lock:
                if pending in self._pending:
                    self._pending.remove(pending)
                inner, pending.unsubscribe = pending.unsubscribe, None
            if inner is not None:
                inner()

        return unsubscribe

    def close(self) -> None:
        """Stop connecting and close the connection (clean disconnect, no last will)."""
        with self._lock:
            self._closed = True
            broker = self._broker
            self._attached.notify_all()
        self._signals.put(_CLOSED)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)
        if broker is not None:
            broker.close()

    # -- the connecting thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed:
            self.attempts += 1
            attempt = self.attempts
            try:
                broker = self._connect(functools.partial(self._ready, attempt))
            except (FleetError, OSError) as exc:
                reason = str(exc)
            else:
                if self._wait_for(attempt, self._attempt_timeout_s):
                    if self._attach(attempt, broker):
                        self._on_online()
                    return
                broker.close()  # joins its dispatcher, so no stale ready signal of this attempt can follow
                reason = f"no answer from the broker at {self._where} within {self._attempt_timeout_s} s"
            delay = self._backoff.next_delay()
            log.warning("%s; next attempt in %.1f s", reason, delay)
            self._wait_for(None, delay)

    def _wait_for(self, attempt: int | None, timeout_s: float) -> bool:
        """Wait until ``attempt`` is ready (True), or until the timeout or close (False)."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                signal = self._signals.get(timeout=remaining)
            except queue.Empty:
                return False
            if signal is _CLOSED:
                return False
            if attempt is not None and signal == attempt:
                return True
        return False

    def _attach(self, attempt: int, broker: PahoBroker) -> bool:
        with self._lock:
            if self._closed:
                attached = False
            else:
                self._broker, self._broker_attempt = broker, attempt
                for pending in self._pending:
                    pending.unsubscribe = broker.subscribe(pending.topic_filter, pending.handler, qos=pending.qos)
                self._pending.clear()
                self._attached.notify_all()
                attached = True
        if not attached:
            broker.close()
        return attached

    def _ready(self, attempt: int) -> None:
        """paho's on-connect hook (dispatcher thread): the first time hand over to `_run`, later announce."""
        with self._lock:
            reconnect = self._broker_attempt == attempt
        if reconnect:
            self._on_online()
        else:
            self._signals.put(attempt)
