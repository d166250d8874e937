"""`MqttSession`: one device's MQTT connection as an asyncio protocol, on the codec of `mqtt_codec`.

It sends CONNECT when the socket opens, acknowledges every QoS 1 message it receives, numbers its own QoS 1
publishes (counting the broker's acknowledgements, without resending: a lost connection ends the simulated
device's run), and hands CONNACK, messages and refused subscriptions to its `SessionOwner`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from bench.devsim import mqtt_codec as codec

RESUBSCRIBE_S = 0.5  # a refused subscription is asked again, after a delay growing from this (as PahoBroker)


class SessionOwner(Protocol):
    """What a session reports to: the simulated device."""

    def on_connected(self, session: MqttSession) -> None: ...

    def on_subscribed(self) -> None: ...

    def on_message(self, topic: str, payload: bytes) -> None: ...

    def on_lost(self, reason: str) -> None: ...


class MqttSession(asyncio.Protocol):
    """One client connection; `connect_packet` is sent as soon as the transport opens."""

    def __init__(self, owner: SessionOwner, connect_packet: bytes) -> None:
        self.owner = owner
        self.connect_packet = connect_packet
        self.transport: asyncio.Transport | None = None
        self.reader = codec.PacketReader()
        self.connected = False
        self.closing = False
        self._next_id = 0
        self.unacked = 0  # QoS 1 publishes the broker has not acknowledged yet
        self.refused_subscriptions = 0  # SUBACK return codes 0x80, each asked again (as `PahoBroker` does)
        self._subscribing: dict[int, list[tuple[str, int]]] = {}
        self.bytes_in = 0
        self.messages_in = 0
        self.messages_out = 0

    # -- asyncio.Protocol ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.connect_packet)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        try:
            for packet in self.reader.feed(data):
                self._dispatch(packet)
        except codec.CodecError as exc:
            self._lose(f"malformed packet from the broker: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        was = self.connected
        self.connected = False
        self.transport = None
        if not self.closing:
            self.owner.on_lost(f"connection lost{' after CONNACK' if was else ' before CONNACK'}: {exc or 'EOF'}")

    # -- sending ------------------------------------------------------------------------------------------------

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish (QoS 0 or 1); dropped silently once the connection is gone."""
        if self.transport is None:
            return
        packet_id = self._packet_id() if qos else 0
        self.unacked += bool(qos)
        self.messages_out += 1
        self.transport.write(codec.encode_publish(topic, payload, qos=qos, retain=retain, packet_id=packet_id))

    def subscribe(self, filters: list[tuple[str, int]]) -> None:
        """Subscribe to (filter, qos) pairs in one packet."""
        if self.transport is not None:
            packet_id = self._packet_id()
            self._subscribing[packet_id] = filters
            self.transport.write(codec.encode_subscribe(packet_id, filters))

    def unsubscribe(self, filters: list[str]) -> None:
        """Unsubscribe from filters in one packet."""
        if self.transport is not None:
            self.transport.write(codec.encode_unsubscribe(self._packet_id(), filters))

    def ping(self) -> None:
        """PINGREQ (the keepalive)."""
        if self.transport is not None:
            self.transport.write(codec.PINGREQ_PACKET)

    def close(self) -> None:
        """DISCONNECT cleanly (no last will) and close the socket."""
        self.closing = True
        if self.transport is not None:
            self.transport.write(codec.DISCONNECT_PACKET)
            self.transport.close()

    def abort(self) -> None:
        """Drop the socket without DISCONNECT (the broker publishes the last will)."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- receiving ----------------------------------------------------------------------------------------------

    def _dispatch(self, packet: codec.Packet) -> None:
        kind = packet.kind
        if kind == codec.PUBLISH:
            message = codec.parse_publish(packet)
            self.messages_in += 1
            if message.packet_id is not None and self.transport is not None:
                self.transport.write(codec.encode_puback(message.packet_id))
            self.owner.on_message(message.topic, message.payload)
        elif kind == codec.PUBACK:
            self.unacked -= 1
        elif kind == codec.SUBACK:
            filters = self._subscribing.pop(codec.packet_id_of(packet), [])
            refused = [f for f, code in zip(filters, packet.body[2:], strict=False) if code == 0x80]
            if refused:  # NATS refuses a QoS 1 subscription whose JetStream consumer it could not create in time
                self.refused_subscriptions += len(refused)
                delay = min(30.0, RESUBSCRIBE_S * 2 ** min(self.refused_subscriptions, 6))
                asyncio.get_running_loop().call_later(delay, self.subscribe, refused)
                return
            self.owner.on_subscribed()
        elif kind == codec.CONNACK:
            if len(packet.body) < 2 or packet.body[1] != 0:
                code = packet.body[1] if len(packet.body) > 1 else -1
                self._lose(f"the broker refused the connection (CONNACK return code {code})")
                return
            self.connected = True
            self.owner.on_connected(self)
        # PINGRESP and UNSUBACK need nothing

    def _lose(self, reason: str) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
        self.owner.on_lost(reason)
