"""The chunk index of a bundle: its content-defined pieces (sha256 and length, in file order), as bytes.

The hub cuts each bundle into pieces at content-defined boundaries (`hub.bundles.chunking`), so a new version
that changed one layer shares every other piece with the version before it. A device that holds the previous
bundle asks for both indexes, copies the pieces it already has from its installed slot and fetches only the
others. The index is a hint for saving bytes, never a trust decision: the reassembled file is checked against
the order's digest and TUF exactly as a full download is.

Binary layout (big-endian)::

    b"EFX1"  uint64 file size  uint32 piece count  then per piece: 32-byte sha256, uint32 length
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from fleet.errors import ProtocolError

_MAGIC: Final = b"EFX1"
_HEADER: Final = struct.Struct(">4sQI")
_RECORD: Final = struct.Struct(">32sI")
_NAME: Final = re.compile(r"^chunk-index\.([0-9a-f]{64})$")
# Fits one metadata reply (512 KiB of JSON after base64): about 85 MiB of bundle at 8 KiB per piece.
MAX_PIECES: Final = 10_000
MAX_INDEX_BYTES: Final = _HEADER.size + MAX_PIECES * _RECORD.size
# A delta is worth it when the installed bundle holds at least this share of the new one's bytes; below it the
# hub pushes the whole bundle to the wave and devices download it whole (both sides use this one threshold).
DELTA_MIN_SHARED: Final = 0.25


@dataclass(frozen=True, slots=True)
class Piece:
    """One content-defined piece of a bundle."""

    offset: int
    length: int
    sha256: bytes  # raw 32-byte digest


@dataclass(frozen=True)
class ChunkIndex:
    """A bundle's pieces in file order; offsets follow from the lengths."""

    size: int
    pieces: tuple[Piece, ...]

    @classmethod
    def of(cls, data: bytes | memoryview, cuts: list[int]) -> ChunkIndex:
        """The index of ``data`` cut at the end offsets ``cuts`` (the last one is ``len(data)``)."""
        pieces, start = [], 0
        for end in cuts:
            pieces.append(Piece(start, end - start, hashlib.sha256(data[start:end]).digest()))
            start = end
        return cls(len(data), tuple(pieces))

    def encode(self) -> bytes:
        """The binary form served to devices."""
        records = b"".join(_RECORD.pack(p.sha256, p.length) for p in self.pieces)
        return _HEADER.pack(_MAGIC, self.size, len(self.pieces)) + records

    @classmethod
    def decode(cls, raw: bytes) -> ChunkIndex:
        """Parse an index; raise `ProtocolError` if it is malformed or its lengths do not add up to its size."""
        if len(raw) < _HEADER.size:
            raise ProtocolError("chunk index too short")
        magic, size, count = _HEADER.unpack_from(raw)
        if magic != _MAGIC:
            raise ProtocolError("not a chunk index (bad magic)")
        if count > MAX_PIECES or len(raw) != _HEADER.size + count * _RECORD.size:
            raise ProtocolError(f"chunk index of {len(raw)} bytes does not hold {count} pieces")
        pieces, offset = [], 0
        for digest, length in _RECORD.iter_unpack(raw[_HEADER.size :]):
            if length == 0:
                raise ProtocolError("chunk index has an empty piece")
            pieces.append(Piece(offset, length, digest))
            offset += length
        if offset != size:
            raise ProtocolError(f"chunk index pieces add up to {offset} bytes, not {size}")
        return cls(size, tuple(pieces))

    def by_digest(self) -> dict[bytes, Piece]:
        """Each distinct piece by its digest (the first one where a digest repeats)."""
        found: dict[bytes, Piece] = {}
        for piece in self.pieces:
            found.setdefault(piece.sha256, piece)
        return found

    def __iter__(self) -> Iterator[Piece]:
        return iter(self.pieces)


def index_name(sha256: str) -> str:
    """The metadata name under which the hub serves the chunk index of bundle ``sha256``."""
    return f"chunk-index.{sha256}"


def parse_index_name(name: str) -> str | None:
    """The bundle digest named by a chunk-index metadata name, or None for any other name."""
    match = _NAME.match(name)
    return match.group(1) if match else None
