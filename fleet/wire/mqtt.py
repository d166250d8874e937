"""`PahoBroker`: the `Broker` protocol over paho-mqtt 2.x, speaking MQTT 3.1.1.

This is the one module in ``fleet`` that does I/O: hub and agent both speak MQTT and may not import each
other, so the adapter lives beside the protocol it carries. paho is imported inside the class.

A connection given failover nodes (other nodes of a broker cluster) moves to the next one whenever it loses
its node or fails to reach it.

Handlers run on one dispatcher thread, in arrival order, never on paho's network thread: a handler may
publish and wait without stalling acknowledgements. The exception is a raw sink (`PahoBroker.subscribe_raw`):
it runs on the network thread the moment a message arrives and may only hand it off, which spares the busiest
channel a thread hop per message. Subscriptions are restored after every reconnect.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from fleet.errors import FleetError
from fleet.wire.backoff import Backoff
from fleet.wire.transport import Handler, Message, Unsubscribe, topic_matches

log = logging.getLogger(__name__)


class BrokerConnectionError(FleetError, ConnectionError):
    """The broker could not be reached or refused the connection."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """TLS for a broker connection: the CA that signed the broker's certificate (None: the system's trust
    store) and, for mutual TLS, this client's certificate and key (PEM files)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the broker's certificate and host name."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerConnectionError(f"cannot load TLS files ({self.ca_file}, {self.cert_file}): {exc}") from exc
        return context


_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker listens, how to log in, and whether to use TLS."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None

    @classmethod
    def from_url(cls, url: str, *, tls: TlsFiles | None = None) -> BrokerAddress:
        """Parse ``mqtt://[user:password@]host[:port]`` or ``mqtts://...`` (TLS, port 8883 by default; ``tls``
        names the CA and client certificate, else the system's trust store is used)."""
        parsed = urlparse(url)
        if parsed.scheme not in _SCHEMES or not parsed.hostname:
            raise BrokerConnectionError(f"broker URL must look like mqtt://host:port or mqtts://host:port, got {url!r}")
        secure = _SCHEMES[parsed.scheme]
        if tls is not None and not secure:
            raise BrokerConnectionError(f"TLS files were given but {url!r} is not an mqtts:// URL")
        return cls(
            host=parsed.hostname,
            port=parsed.port or (8883 if secure else 1883),
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            tls=(tls or TlsFiles()) if secure else None,
        )

    def with_credentials(self, username: str | None, password: str | None) -> BrokerAddress:
        """The same address with other credentials."""
        return BrokerAddress(self.host, self.port, username, password, self.tls)

    @property
    def url(self) -> str:
        """``mqtt(s)://host:port`` without credentials."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Will:
    """Last-will message the broker publishes when the connection drops."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


_STOP = object()
_MAX_ROUTES = 100_000  # topics whose matching handlers are remembered (a fleet's devices x channels)


class _Raw:
    """A handler that runs on the network thread (`PahoBroker.subscribe_raw`)."""

    __slots__ = ("sink",)

    def __init__(self, sink: Handler) -> None:
        self.sink = sink

    def __call__(self, message: Message) -> None:
        self.sink(message)


class PahoBroker:
    """A connected MQTT client implementing `fleet.wire.transport.Broker`."""

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str | None = None,
        will: Will | None = None,
        keepalive_s: int = 30,
        connect_timeout_s: float = 10.0,
        reconnect_max_delay_s: int = 30,
        on_connect: Any = None,
        wait_connected: bool = True,
        max_inflight: int = 20,
        failover: Sequence[tuple[str, int]] = (),
    ) -> None:
        import paho.mqtt.client as mqtt

        self.address = address
        # other nodes of a broker cluster (same TLS and login): a lost or failed connection tries the next one
        self._nodes = [
            (address.host, address.port),
            *(node for node in failover if node != (address.host, address.port)),
        ]
        self._node = 0
        self.client_id = client_id or f"edgefleet-{uuid.uuid4().hex[:12]}"
        self._subscriptions: dict[str, tuple[int, list[Handler]]] = {}
        self._routes: dict[str, tuple[list[Handler], list[Handler]]] = {}  # topic -> (raw sinks, handlers)
        self._lock = threading.Lock()
        self._acknowledged = threading.Condition(self._lock)  # a SUBACK arrived or the connection became ready
        self._connected = threading.Event()
        self._answered = threading.Event()  # the first attempt ended: connected, refused or failed
        self._closed = False
        self._connect_error: str | None = None
        self._on_connect_hook = on_connect
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._dispatcher = threading.Thread(target=self._dispatch, name=f"mqtt-dispatch-{self.client_id}", daemon=True)
        self._client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self._client.max_queued_messages_set(10_000)
        self._client.max_inflight_messages_set(max_inflight)  # QoS 1 publishes awaiting the broker's ack
        if address.tls is not None:
            self._client.tls_set_context(address.tls.context())
        if address.username is not None:
            self._client.username_pw_set(address.username, address.password)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._reconnects = Backoff(1.0, float(reconnect_max_delay_s))
        self._next_reconnect_delay()
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_subscribe = self._handle_subscribe
        self._client.on_connect_fail = self._handle_connect_fail
        self._restoring_mid: int | None = None
        self._sent_subscribes: dict[int, list[tuple[str, int]]] = {}
        self._subscribe_retries: dict[str, int] = {}
        self._early_subacks: dict[int, list[Any]] = {}
        self._dispatcher.start()
        try:
            self._client.connect_async(address.host, address.port, keepalive=keepalive_s)
        except OSError as exc:
            self._stop_dispatcher()
            raise BrokerConnectionError(f"cannot reach broker at {address.host}:{address.port}: {exc}") from exc
        self._client.loop_start()
        if wait_connected and not (self._answered.wait(connect_timeout_s) and self._connected.is_set()):
            reason = self._connect_error or _probe(address) or "timed out"
            self.close()
            raise BrokerConnectionError(f"cannot connect to broker at {address.host}:{address.port}: {reason}")

    @property
    def connected(self) -> bool:
        """Whether the connection is currently up."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected or ``timeout_s`` passes; return whether connected."""
        return self._connected.wait(timeout_s)

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Block until connected and every subscription sent so far is acknowledged (a refused one: accepted on
        a retry); return whether that happened within ``timeout_s``. Messages published after this reach them."""

        def settled() -> bool:
            pending = self._sent_subscribes or self._subscribe_retries or self._restoring_mid is not None
            return self._connected.is_set() and not pending

        with self._acknowledged:
            return self._acknowledged.wait_for(settled, timeout_s)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue a publish; paho sends it now or after reconnecting."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (0, 4):  # 4 = not connected: queued and sent after reconnect
            raise BrokerConnectionError(f"publish to {topic} failed with paho code {info.rc}")

    def publish_and_wait(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout_s: float = 10.0
    ) -> bool:
        """Publish and wait until the broker acknowledged it (QoS 1) or it was written (QoS 0)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def subscribe_raw(self, topic_filter: str, sink: Handler, *, qos: int = 1) -> Unsubscribe:
        """`subscribe`, but ``sink`` runs on paho's network thread as each message arrives, ahead of the
        dispatcher: for a hand-off that only queues the message (never blocks, never publishes)."""
        return self.subscribe(topic_filter, _Raw(sink), qos=qos)

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> Unsubscribe:
        """Subscribe ``handler`` to ``topic_filter``; return the function that removes it."""
        with self._lock:
            self._routes.clear()
            existing = self._subscriptions.get(topic_filter)
            handlers = existing[1] if existing else []
            handlers.append(handler)
            self._subscriptions[topic_filter] = (max(qos, existing[0]) if existing else qos, handlers)
            first = existing is None
        if first and self.connected:
            self._send_subscribe([(topic_filter, qos)])

        def unsubscribe() -> None:
            with self._lock:
                entry = self._subscriptions.get(topic_filter)
                if entry is None or handler not in entry[1]:
                    return
                entry[1].remove(handler)
                self._routes.clear()
                last = not entry[1]
                if last:
                    del self._subscriptions[topic_filter]
            if last and not self._closed:
                self._client.unsubscribe(topic_filter)

        return unsubscribe

    def close(self) -> None:
        """Disconnect cleanly (no last will) and stop the network and dispatcher threads."""
        if self._closed:
            return
        self._closed = True
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self._stop_dispatcher()

    def _stop_dispatcher(self) -> None:
        self._inbox.put(_STOP)
        if threading.current_thread() is not self._dispatcher:
            self._dispatcher.join(timeout=10)

    def _handle_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._connect_error = str(reason_code)
            log.warning("broker refused %s: %s", self.client_id, reason_code)
            refused = str(reason_code) in ("Not authorized", "Bad user name or password")
            if refused and not self._answered.is_set():
                # the first attempt: the caller decides (raise, or retry with its own backoff); later refusals
                # (a broker restarting, a login back-off) are retried by paho with its growing delay
                client.disconnect()
            self._answered.set()
            return
        with self._lock:
            subscriptions = [(f, q) for f, (q, _) in self._subscriptions.items()]
            if subscriptions:
                # "connected" means ready: every subscription restored and acknowledged by the broker
                _, mid = client.subscribe(subscriptions)
                self._restoring_mid = mid
                self._sent_subscribes[mid] = subscriptions
            else:
                self._restoring_mid = None
        if not subscriptions:
            self._ready()

    def _send_subscribe(self, subscriptions: list[tuple[str, int]]) -> None:
        _, mid = self._client.subscribe(subscriptions)
        if mid is None:
            return
        with self._lock:
            early = self._early_subacks.pop(mid, None)  # the SUBACK can beat this thread here
            if early is None:
                self._sent_subscribes[mid] = subscriptions
        if early is not None:
            self._retry_refused(subscriptions, early)

    def _handle_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        with self._lock:
            restoring = mid == self._restoring_mid
            if restoring:
                self._restoring_mid = None
            sent = self._sent_subscribes.pop(mid, None)
            if sent is None and not restoring:
                self._early_subacks[mid] = list(reason_codes)
            self._acknowledged.notify_all()
        if sent:
            self._retry_refused(sent, reason_codes)
        if restoring:
            self._ready()

    def _retry_refused(self, sent: list[tuple[str, int]], reason_codes: Any) -> None:
        for (topic_filter, qos), code in zip(sent, reason_codes, strict=False):
            if _is_failure(code):
                self._retry_subscribe(topic_filter, qos)
            else:
                with self._acknowledged:
                    self._subscribe_retries.pop(topic_filter, None)
                    self._acknowledged.notify_all()

    def _retry_subscribe(self, topic_filter: str, qos: int) -> None:
        """A broker may refuse a subscription for a while (NATS while JetStream recovers): ask again with a
        growing delay for as long as the filter is wanted."""
        with self._lock:
            attempt = self._subscribe_retries.get(topic_filter, 0)
            self._subscribe_retries[topic_filter] = attempt + 1
        delay = min(30.0, 0.5 * 2**attempt)
        log.warning("%s: broker refused subscription %s; asking again in %.1f s", self.client_id, topic_filter, delay)

        def again() -> None:
            with self._lock:
                wanted = topic_filter in self._subscriptions
            if wanted and self.connected and not self._closed:
                self._send_subscribe([(topic_filter, qos)])

        timer = threading.Timer(delay, again)
        timer.daemon = True
        timer.start()

    def _next_reconnect_delay(self) -> None:
        """Draw the wait before paho's next reconnect with jitter (`Backoff`): a fleet whose broker restarts comes
        back spread out, not in paho's lockstep doubling waves."""
        delay = self._reconnects.next_delay()
        self._client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]  # floats work

    def _handle_connect_fail(self, client: Any, userdata: Any) -> None:
        self._answered.set()
        self._next_reconnect_delay()
        self._next_node()

    @property
    def node(self) -> tuple[str, int]:
        """The broker node this connection is on, or tries next."""
        return self._nodes[self._node]

    def _next_node(self) -> None:
        """With failover nodes, aim paho's next reconnect at the next node in turn (the lost one may be down)."""
        if len(self._nodes) < 2 or self._closed:
            return
        self._node = (self._node + 1) % len(self._nodes)
        host, port = self._nodes[self._node]
        # paho's host/port setters refuse while its state still says "connected", which it does when a lost
        # connection is reported; the socket is closed by then and the next reconnect reads these two fields
        self._client._host, self._client._port = host, port
        log.info("%s: next connection attempt goes to the broker node %s:%d", self.client_id, host, port)

    def _ready(self) -> None:
        self._reconnects.reset()
        self._connected.set()
        self._answered.set()
        with self._acknowledged:
            self._acknowledged.notify_all()
        if self._on_connect_hook is not None:
            self._inbox.put(self._on_connect_hook)

    def _handle_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        with self._lock:  # SUBACKs still awaited never come: the reconnect restores every subscription anew
            self._sent_subscribes.clear()
            self._early_subacks.clear()
            self._restoring_mid = None
        self._answered.set()
        self._next_reconnect_delay()
        self._next_node()
        if not self._closed:
            log.info("%s lost its broker connection (%s); paho reconnects with backoff", self.client_id, reason_code)

    def _route(self, topic: str) -> tuple[list[Handler], list[Handler]]:
        """The raw sinks and the dispatcher's handlers subscribed to ``topic`` (remembered per topic)."""
        with self._lock:
            route = self._routes.get(topic)
            if route is None:
                matching = [h for f, (_, hs) in self._subscriptions.items() if topic_matches(f, topic) for h in hs]
                route = ([h for h in matching if isinstance(h, _Raw)], [h for h in matching if not isinstance(h, _Raw)])
                if len(self._routes) >= _MAX_ROUTES:
                    self._routes.clear()
                self._routes[topic] = route
        return route

    def _handle_message(self, client: Any, userdata: Any, message: Any) -> None:
        item = Message(message.topic, bytes(message.payload), message.qos, bool(message.retain))
        sinks, handlers = self._route(item.topic)
        for sink in sinks:
            self._run_safely(sink, item)
        if handlers:
            self._inbox.put(item)

    def _dispatch(self) -> None:
        while True:
            item = self._inbox.get()
            if item is _STOP:
                return
            if callable(item):
                self._run_safely(item)
                continue
            for handler in self._route(item.topic)[1]:
                self._run_safely(handler, item)

    @staticmethod
    def _run_safely(func: Any, *args: Any) -> None:
        try:
            func(*args)
        except Exception:  # a bad message must never kill the dispatcher
            log.exception("MQTT handler %s failed", getattr(func, "__qualname__", func))


def _probe(address: BrokerAddress, timeout_s: float = 5.0) -> str | None:
    """Why a connection cannot be made, from a direct attempt (paho's background loop keeps the reason to
    itself): a refused port, or the TLS handshake's error such as an unknown CA or an expired certificate."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout_s) as sock:
            if address.tls is None:
                return None
            with address.tls.context().wrap_socket(sock, server_hostname=address.host) as tls:
                tls.recv(1)  # a refused client certificate shows up on the first read (TLS 1.3)
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: the broker's certificate is not trusted ({exc.verify_message})"
    except ssl.SSLError as exc:
        return f"TLS: {exc.reason or exc}"
    except TimeoutError:
        return None
    except OSError as exc:
        return str(exc)
    return None


def _is_failure(code: Any) -> bool:
    """Whether a SUBACK return code refuses the subscription (0x80 in MQTT 3.1.1, >= 0x80 in MQTT 5)."""
    failure = getattr(code, "is_failure", None)
    if isinstance(failure, bool):
        return failure
    return int(getattr(code, "value", code)) >= 0x80
