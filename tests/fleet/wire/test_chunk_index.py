"""The chunk index codec: round trip, and malformed indexes refused with one clear error."""

from __future__ import annotations

import hashlib

import pytest

from fleet.errors import ProtocolError
from fleet.wire.chunk_index import ChunkIndex, index_name, parse_index_name

DATA = bytes(range(256)) * 100


def _index() -> ChunkIndex:
    return ChunkIndex.of(DATA, [10_000, 20_000, len(DATA)])


def test_round_trip_keeps_offsets_lengths_and_digests() -> None:
    decoded = ChunkIndex.decode(_index().encode())
    assert [(p.offset, p.length) for p in decoded] == [(0, 10_000), (10_000, 10_000), (20_000, 5_600)]
    assert decoded.pieces[1].sha256 == hashlib.sha256(DATA[10_000:20_000]).digest()


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda raw: raw[:10], "too short"),
        (lambda raw: b"XXXX" + raw[4:], "bad magic"),
        (lambda raw: raw[:-1], "does not hold 3 pieces"),
        (lambda raw: raw[:4] + (1).to_bytes(8, "big") + raw[12:], "add up to 25600 bytes, not 1"),
    ],
)
def test_a_malformed_index_is_refused(corrupt: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        ChunkIndex.decode(corrupt(_index().encode()))  # type: ignore[operator]


def test_index_names_name_one_bundle() -> None:
    sha = "ab" * 32
    assert parse_index_name(index_name(sha)) == sha
    assert parse_index_name("timestamp.json") is None and parse_index_name("chunk-index.xyz") is None
