"""The few MQTT 3.1.1 packets a device sends and receives, encoded and parsed without a client library.

A simulated device needs CONNECT (with a last will), SUBSCRIBE/UNSUBSCRIBE, PUBLISH at QoS 0/1 both ways,
PUBACK, PINGREQ and DISCONNECT. `PacketReader` splits a byte stream into packets; `parse_publish` reads one
PUBLISH. QoS 2 is not part of the protocol (see docs/protocol.md), so it is not here either.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

PINGREQ_PACKET: Final = b"\xc0\x00"
DISCONNECT_PACKET: Final = b"\xe0\x00"
MAX_REMAINING: Final = 268_435_455  # the largest length four varint bytes hold


class CodecError(ValueError):
    """A malformed packet from the broker."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet: its type (high nibble of the first byte), flags (low nibble) and body."""

    kind: int
    flags: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Publish:
    """A parsed PUBLISH."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    packet_id: int | None


def _varint(n: int) -> bytes:
    if not 0 <= n <= MAX_REMAINING:
        raise CodecError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    keepalive_s: int = 60,
    clean_session: bool = True,
    username: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes, int, bool] | None = None,
) -> bytes:
    """CONNECT for protocol level 4 (3.1.1); ``will`` is (topic, payload, qos, retain)."""
    flags = 0x02 if clean_session else 0
    payload = _string(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _string(topic) + _string(message)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
    if password is not None:
        flags |= 0x40
        payload += _string(password)
    variable = _string("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive_s)
    return _packet(CONNECT << 4, variable + payload)


def encode_publish(topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, packet_id: int = 0) -> bytes:
    """PUBLISH at QoS 0 or 1 (``packet_id`` is required, and non-zero, for QoS 1)."""
    if qos not in (0, 1):
        raise CodecError(f"QoS {qos} is not used by the protocol")
    variable = _string(topic)
    if qos:
        if not 0 < packet_id < 65536:
            raise CodecError("a QoS 1 publish needs a packet id in 1..65535")
        variable += struct.pack(">H", packet_id)
    return _packet((PUBLISH << 4) | (qos << 1) | (1 if retain else 0), variable + payload)


def encode_puback(packet_id: int) -> bytes:
    """PUBACK for a QoS 1 PUBLISH received."""
    return _packet(PUBACK << 4, struct.pack(">H", packet_id))


def encode_subscribe(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    """SUBSCRIBE to (filter, qos) pairs."""
    body = struct.pack(">H", packet_id) + b"".join(_string(f) + bytes([qos]) for f, qos in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def encode_unsubscribe(packet_id: int, filters: list[str]) -> bytes:
    """UNSUBSCRIBE from filters."""
    return _packet((UNSUBSCRIBE << 4) | 0x02, struct.pack(">H", packet_id) + b"".join(_string(f) for f in filters))


def parse_publish(packet: Packet) -> Publish:
    """The topic, payload, QoS, retain flag and packet id of a PUBLISH."""
    body = packet.body
    if len(body) < 2:
        raise CodecError("PUBLISH too short")
    (length,) = struct.unpack_from(">H", body)
    qos = (packet.flags >> 1) & 0x03
    end = 2 + length
    packet_id = None
    if qos:
        if len(body) < end + 2:
            raise CodecError("PUBLISH too short for its packet id")
        (packet_id,) = struct.unpack_from(">H", body, end)
        end += 2
    elif len(body) < end:
        raise CodecError("PUBLISH too short for its topic")
    return Publish(body[2 : 2 + length].decode(), body[end:], qos, bool(packet.flags & 0x01), packet_id)


def packet_id_of(packet: Packet) -> int:
    """The packet id that starts the body of PUBACK, SUBACK and UNSUBACK."""
    if len(packet.body) < 2:
        raise CodecError(f"packet type {packet.kind} too short")
    return int(struct.unpack_from(">H", packet.body)[0])


class PacketReader:
    """Splits a byte stream into packets: `feed` what arrived, iterate over the complete ones."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Packet]:
        """Add ``data``; yield every packet now complete (a partial one waits for more)."""
        buffer = self._buffer
        buffer += data
        start = 0
        try:
            while len(buffer) - start >= 2:
                length, multiplier, pos = 0, 1, start + 1
                while True:
                    if pos >= len(buffer):
                        return  # the length itself is incomplete
                    byte = buffer[pos]
                    length += (byte & 0x7F) * multiplier
                    pos += 1
                    if not byte & 0x80:
                        break
                    multiplier *= 128
                    if multiplier > 128**3:
                        raise CodecError("remaining length longer than four bytes")
                if len(buffer) - pos < length:
                    return
                first = buffer[start]
                yield Packet(first >> 4, first & 0x0F, bytes(buffer[pos : pos + length]))
                start = pos + length
        finally:
            del buffer[:start]
