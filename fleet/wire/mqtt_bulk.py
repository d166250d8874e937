"""`BulkSubscriber`: one receive-only MQTT 3.1.1 connection for busy subscriptions and their QoS 0 replies (the
hub reads telemetry on one, its other device channels on another, fetch requests on a third).

paho handles each received message in several Python calls and answers each QoS 1 message with a write of its
own, which costs about 100 us a message. Here each socket read is parsed at once: every whole PUBLISH frame
in it becomes a `Message` handed to the sink (on this connection's thread, so the sink must only hand it off),
and the PUBACKs of that read go out in one write, after the sink returned: a message is acknowledged to the
broker only once it was handed over, as QoS 1 asks.

The connection logs in like `fleet.wire.mqtt.PahoBroker` (username and password, TLS with the same
`TlsFiles`), subscribes once and checks the SUBACK (a refused subscription is an error), keeps itself alive
with PINGREQ, and after a lost connection, a broker that stopped answering or a malformed frame (one line in
the log) reconnects with jittered backoff (`fleet.wire.backoff.Backoff`) and subscribes again, to the next
node in turn where it was given failover nodes (other nodes of a broker cluster, as `PahoBroker`).
``$share/...`` filters work as they do on the broker.

Its `publish` sends QoS 0 replies (the hub's telemetry acknowledgements): they queue, and the connection's
thread writes all that queued in one write, instead of paho's wake-up and write per message. The hub's other
publishes (orders, metadata, chunks) stay on `PahoBroker`. `subscribe_raw_all` subscribes several filters in
one SUBSCRIBE: their messages reach the sink in the broker's order.

    subscriber = BulkSubscriber(address, client_id="edgefleet-ingest-1")
    unsubscribe = subscriber.subscribe_raw("$share/hub/edgefleet/v1/devices/+/telemetry", ingestor.submit_payload)
    subscriber.publish("edgefleet/v1/devices/cam-1/telemetry-ack", ack)  # QoS 0, dropped while disconnected
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Final

from fleet.wire.backoff import Backoff
from fleet.wire.mqtt import BrokerAddress, BrokerConnectionError, _probe
from fleet.wire.transport import Handler, Message, Unsubscribe

__all__ = ["BulkSubscriber", "MalformedFrame"]

log = logging.getLogger(__name__)

_CONNECT_REFUSALS: Final = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
_PUBLISH, _PUBACK, _SUBACK, _PINGRESP, _CONNACK = 3, 4, 9, 13, 2
_PINGREQ: Final = b"\xc0\x00"
_DISCONNECT: Final = b"\xe0\x00"
_READ_BYTES: Final = 1 << 20
_SUBSCRIBE_ID: Final = 1


class MalformedFrame(BrokerConnectionError):
    """The broker sent bytes that are not the MQTT 3.1.1 packet expected here."""


class _Refused(BrokerConnectionError):
    """The broker refused the login or the subscription."""


class _SubscriptionRefused(_Refused):
    """The broker refused the subscription (NATS does for a while as JetStream recovers): asked again."""


def _string(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


def connect_packet(client_id: str, username: str | None, password: str | None, keepalive_s: int) -> bytes:
    """A CONNECT with a clean session (MQTT 3.1.1)."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if username is not None and password else 0)
    body = _string("MQTT") + bytes([4, flags]) + keepalive_s.to_bytes(2, "big") + _string(client_id)
    if username is not None:
        body += _string(username)
        if password:
            body += _string(password)
    return _packet(0x10, body)


def publish_packet(topic: str, payload: bytes, *, retain: bool = False) -> bytes:
    """A QoS 0 PUBLISH."""
    return _packet(0x31 if retain else 0x30, _string(topic) + payload)


def subscribe_packet(filters: Mapping[str, int]) -> bytes:
    """A SUBSCRIBE of every filter (topic filter -> QoS) at once."""
    body = b"".join(_string(topic_filter) + bytes([qos]) for topic_filter, qos in filters.items())
    return _packet(0x82, _SUBSCRIBE_ID.to_bytes(2, "big") + body)


class _Frames:
    """What one parse of the receive buffer found."""

    __slots__ = ("acks", "consumed", "control", "error", "messages")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.acks = bytearray()  # the PUBACKs owed for the QoS 1 messages
        self.control: list[tuple[int, bytes]] = []  # (packet type, body) of every other packet
        self.consumed = 0
        self.error: MalformedFrame | None = None  # parsing stopped at a malformed frame


def parse_frames(buf: bytes | bytearray, *, first_only: bool = False) -> _Frames:
    """Every whole packet at the start of ``buf`` (only the first with ``first_only``), up to the first
    incomplete one (``consumed`` says where it starts) or the first that cannot be MQTT 3.1.1 from a broker
    (``error``; the packets before it are kept)."""
    found = _Frames()
    messages, acks, n, pos = found.messages, found.acks, len(buf), 0
    with memoryview(buf) as view:
        while n - pos >= 2:
            first = buf[pos]
            length, shift, i = 0, 0, pos + 1
            while i < n:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
                if shift > 21:
                    found.error = MalformedFrame("malformed MQTT frame: remaining length longer than 4 bytes")
                    break
            else:
                break  # the remaining length is still incomplete
            if found.error is not None:
                break
            end = i + length
            if end > n:
                break
            kind = first >> 4
            if kind == _PUBLISH:
                qos = (first >> 1) & 3
                topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1]) if length >= 2 else end + 1
                payload_at = topic_end + (2 if qos else 0)
                if qos > 1 or payload_at > end:
                    found.error = MalformedFrame(f"malformed MQTT PUBLISH frame (QoS {qos}, {length} bytes)")
                    break
                try:
                    topic = str(view[i + 2 : topic_end], "utf-8")
                except UnicodeDecodeError:
                    found.error = MalformedFrame("malformed MQTT PUBLISH frame: the topic is not UTF-8")
                    break
                if qos:
                    acks += b"\x40\x02"
                    acks += view[topic_end:payload_at]
                messages.append(Message(topic, bytes(view[payload_at:end]), qos, bool(first & 1)))
            elif kind in (_CONNACK, _SUBACK, _PINGRESP):
                found.control.append((kind, bytes(view[i:end])))
            else:
                found.error = MalformedFrame(f"unexpected MQTT packet type {kind} from the broker")
                break
            pos = end
            if first_only:
                break
    found.consumed = pos
    return found


def _drain(sock: socket.socket, timeout_s: float = 2.0) -> None:
    """Half-close and read until the broker closes its side: closing a socket with unread bytes sends a reset,
    and a broker that gets one may drop what it had not yet processed (the last replies)."""
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(timeout_s)
    while sock.recv(_READ_BYTES):
        pass


class BulkSubscriber:
    """One MQTT connection that reads one subscription in bulk; implements `fleet.wire.transport.RawSubscriber`.

    `subscribe_raw` connects, subscribes and waits for the SUBACK (`BrokerConnectionError` when the first attempt
    fails, or the broker still refuses the subscription after ``connect_timeout_s``); its unsubscribe function,
    like `close`, disconnects. One subscription per connection; `publish` sends at QoS 0 only.
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str | None = None,
        keepalive_s: int = 30,
        connect_timeout_s: float = 10.0,
        reconnect_max_delay_s: float = 30.0,
        failover: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.address = address
        self._nodes = [(address.host, address.port), *(n for n in failover if n != (address.host, address.port))]
        self._node = 0
        self.client_id = client_id or f"edgefleet-{uuid.uuid4().hex[:12]}"
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.received = 0
        self.reconnects = 0
        self._backoff = Backoff(1.0, reconnect_max_delay_s)
        self._wake_r, self._wake_w = socket.socketpair()  # wakes the connection's thread: close, or frames to send
        self._wake_r.setblocking(False)
        self._outbox: list[bytes] = []  # QoS 0 frames for the connection's thread to write
        self._outbox_lock = threading.Lock()
        self._closed = threading.Event()
        self._connected = threading.Event()
        self._answered = threading.Event()  # the first attempt ended: subscribed, refused or failed
        self._first_error: str | None = None
        self._last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._filters: dict[str, int] = {}  # topic filter -> QoS, subscribed in one SUBSCRIBE
        self._sink: Handler | None = None
        self._pending = bytearray()  # bytes read after the SUBACK, before `_read` takes over
        self._last_sent = 0.0  # when a packet last went to the broker (the keepalive counts from it)

    @property
    def node(self) -> tuple[str, int]:
        """The broker node this connection is on, or tries next."""
        return self._nodes[self._node]

    @property
    def connected(self) -> bool:
        """Whether the connection is up and subscribed."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected and subscribed or ``timeout_s`` passes; return whether connected."""
        return self._connected.wait(timeout_s)

    def subscribe_raw(self, topic_filter: str, sink: Handler, *, qos: int = 1) -> Unsubscribe:
        """Connect, subscribe ``sink`` to ``topic_filter`` and return the function that disconnects.

        ``sink`` runs on this connection's thread for each message as it is parsed, before the message is
        acknowledged: it must only hand it off (queue it), never block or publish."""
        return self.subscribe_raw_all({topic_filter: qos}, sink)

    def subscribe_raw_all(self, filters: Mapping[str, int], sink: Handler) -> Unsubscribe:
        """`subscribe_raw` for several filters (topic filter -> QoS) on this one connection: their messages
        reach ``sink`` in the order the broker sends them."""
        if self._thread is not None:
            raise RuntimeError("a BulkSubscriber subscribes once; open another connection for more")
        if not filters:
            raise ValueError("nothing to subscribe to")
        for qos in filters.values():
            if qos not in (0, 1):
                raise ValueError(f"BulkSubscriber reads QoS 0 or 1, not {qos}")
        topic_filter = ", ".join(filters)
        self._filters, self._sink = dict(filters), sink
        self._thread = threading.Thread(target=self._run, name=f"mqtt-bulk-{self.client_id}", daemon=True)
        self._thread.start()
        # answered without an error: subscribed once (the link may be down again already: it reconnects by itself)
        if not self._answered.wait(self.connect_timeout_s) or self._first_error is not None:
            reason = self._first_error or self._last_error or _probe(self.address) or "timed out"
            self.close()
            raise BrokerConnectionError(
                f"cannot subscribe to {topic_filter} at {self.address.host}:{self.address.port}: {reason}"
            )
        return self.close

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Queue a QoS 0 message for the connection's thread to write with whatever else is queued; dropped while
        disconnected, as QoS 0 allows."""
        if qos != 0:
            raise ValueError(f"BulkSubscriber publishes at QoS 0 only, not {qos}")
        frame = publish_packet(topic, payload, retain=retain)
        with self._outbox_lock:
            if not self._connected.is_set():
                return
            wake = not self._outbox
            self._outbox.append(frame)
        if wake:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"w")

    def close(self) -> None:
        """Send the replies queued so far, disconnect cleanly and stop the connection's thread; safe to call
        twice."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._wake_r.close()
        self._wake_w.close()

    # -- the connection's thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            sock: socket.socket | None = None
            try:
                sock = self._connect()
                self._read(sock)
            except (OSError, BrokerConnectionError) as exc:
                reason = self._last_error = str(exc) or type(exc).__name__
                if not self._answered.is_set() and not isinstance(exc, _SubscriptionRefused):
                    self._first_error = reason  # a refused subscription is asked for again until subscribe_raw gives up
                    self._answered.set()
                    return  # the caller of subscribe_raw raises
                if not self._closed.is_set():
                    log.warning("%s: %s; reconnecting", self.client_id, reason)
                self._node = (self._node + 1) % len(self._nodes)  # the lost node may be down: the next one
            except Exception as exc:  # a bug here must not end telemetry for good: log it and connect again
                if not self._answered.is_set():
                    self._first_error = f"{type(exc).__name__}: {exc}"
                    self._answered.set()
                    return
                log.exception("%s: the connection failed; reconnecting", self.client_id)
                self._node = (self._node + 1) % len(self._nodes)
            finally:
                with self._outbox_lock:
                    self._connected.clear()
                    self._outbox.clear()
                if sock is not None:
                    sock.close()
            if self._closed.wait(self._backoff.next_delay()):
                return
            self.reconnects += 1

    def _connect(self) -> socket.socket:
        address = self.address
        host, port = self._nodes[self._node]
        sock: socket.socket = socket.create_connection((host, port), timeout=self.connect_timeout_s)
        try:
            if address.tls is not None:
                sock = address.tls.context().wrap_socket(sock, server_hostname=host)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pending = bytearray()
            sock.sendall(connect_packet(self.client_id, address.username, address.password, self.keepalive_s))
            connack = self._await(sock, _CONNACK)
            if len(connack) != 2:
                raise MalformedFrame("malformed MQTT CONNACK")
            if connack[1]:
                raise _Refused(f"broker refused the login: {_CONNECT_REFUSALS.get(connack[1], connack[1])}")
            sock.sendall(subscribe_packet(self._filters))
            suback = self._await(sock, _SUBACK)
            if len(suback) != 2 + len(self._filters) or int.from_bytes(suback[:2], "big") != _SUBSCRIBE_ID:
                raise MalformedFrame("malformed MQTT SUBACK")
            refused = [f for f, code in zip(self._filters, suback[2:], strict=True) if code >= 0x80]
            if refused:
                raise _SubscriptionRefused(f"broker refused the subscription {', '.join(refused)}")
        except BaseException:
            sock.close()
            raise
        sock.settimeout(max(1.0, float(self.keepalive_s)))
        self._backoff.reset()
        self._connected.set()
        self._answered.set()
        return sock

    def _await(self, sock: socket.socket, kind: int) -> bytes:
        """Read until the packet of type ``kind`` arrives and return its body; keep what follows it unread."""
        deadline = time.monotonic() + self.connect_timeout_s
        buf = self._pending
        while True:
            found = parse_frames(buf, first_only=True)
            if found.error is not None:
                raise found.error
            if found.consumed:
                del buf[: found.consumed]
                self._pending = buf
                got = found.control[0][0] if found.control else _PUBLISH
                if got == kind:
                    return found.control[0][1]
                if got != _PINGRESP:
                    raise MalformedFrame(f"unexpected MQTT packet type {got} while waiting for packet type {kind}")
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerConnectionError(f"no answer from the broker within {self.connect_timeout_s:.0f} s")
            sock.settimeout(remaining)
            data = sock.recv(_READ_BYTES)
            if not data:
                raise BrokerConnectionError("the broker closed the connection")
            buf += data

    def _read(self, sock: socket.socket) -> None:
        """Deliver and acknowledge messages until the connection fails or `close` is called."""
        keepalive = float(self.keepalive_s)
        self._last_sent = time.monotonic()
        ping_sent: float | None = None
        tls_pending = sock.pending if isinstance(sock, ssl.SSLSocket) else None
        tail, _ = self._handle(sock, self._pending)  # whole frames may have come with the SUBACK
        self._pending = bytearray()
        while not self._closed.is_set():
            now = time.monotonic()
            if ping_sent is not None and now - ping_sent > keepalive:
                raise BrokerConnectionError(f"the broker did not answer a ping within {keepalive:.0f} s")
            if ping_sent is None and now - self._last_sent >= keepalive / 2:
                sock.sendall(_PINGREQ)
                ping_sent = self._last_sent = now
            wait = keepalive / 2 - (now - self._last_sent) if ping_sent is None else keepalive - (now - ping_sent)
            if tls_pending is None or not tls_pending():
                ready, _, _ = select.select([sock, self._wake_r], [], [], max(0.01, wait))
                if self._wake_r in ready:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    self._flush(sock)
                if sock not in ready:
                    continue
            data: bytes | bytearray = sock.recv(_READ_BYTES)
            if not data:
                raise BrokerConnectionError("the broker closed the connection")
            if tail:
                tail += data
                data = tail
            tail, answered = self._handle(sock, data)
            if answered:
                ping_sent = None
            if self._outbox:  # replies queued while reading (a TLS read may skip the select above)
                self._flush(sock)
        with contextlib.suppress(OSError):  # closing: the replies queued until now go out first
            self._flush(sock)
            sock.sendall(_DISCONNECT)
            _drain(sock)

    def _handle(self, sock: socket.socket, data: bytes | bytearray) -> tuple[bytearray, bool]:
        """Deliver and acknowledge the whole frames in ``data``; return the incomplete rest and whether a
        PINGRESP came."""
        found = parse_frames(data)
        if found.messages:
            self._deliver(sock, found)
        if found.error is not None:
            raise found.error
        answered = False
        for kind, _ in found.control:
            if kind != _PINGRESP:
                raise MalformedFrame(f"unexpected MQTT packet type {kind} on a subscribed connection")
            answered = True
        return bytearray(data[found.consumed :]), answered

    def _flush(self, sock: socket.socket) -> None:
        """Write every queued frame at once."""
        with self._outbox_lock:
            frames, self._outbox = self._outbox, []
        if frames:
            sock.sendall(b"".join(frames))
            self._last_sent = time.monotonic()

    def _deliver(self, sock: socket.socket, found: _Frames) -> None:
        """Hand each message to the sink, then acknowledge them all in one write."""
        sink = self._sink
        assert sink is not None
        for message in found.messages:
            try:
                sink(message)
            except Exception:  # a bad message must never stop the connection; QoS 1 still owes the ack
                log.exception("MQTT sink %s failed", getattr(sink, "__qualname__", sink))
        self.received += len(found.messages)
        if found.acks:
            sock.sendall(found.acks)
            self._last_sent = time.monotonic()
