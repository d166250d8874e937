"""Content-defined chunking of bundles (gear hash, FastCDC-style cut points), vectorised with numpy.

A cut falls after byte ``i`` when the top ``_MASK_BITS`` bits of the gear hash of the 32 bytes ending at ``i``
are zero, and the piece is at least ``MIN_PIECE`` long; a piece never exceeds ``MAX_PIECE``. Boundaries
depend only on nearby content, so an edit moves the cuts around it and no others: the pieces of unchanged
tensors are byte-identical across versions. The gear table and sizes are part of the protocol (a device
reuses pieces by digest), so changing them only costs reuse across the change, never correctness.
"""

from __future__ import annotations

import hashlib
from typing import Final

import numpy as np

from fleet.wire.chunk_index import ChunkIndex

MIN_PIECE: Final = 2 * 1024
MAX_PIECE: Final = 64 * 1024
_MASK_BITS: Final = 13  # about one cut per 8 KiB past the minimum
_WINDOW: Final = 32  # a 32-bit gear hash depends on the last 32 bytes
_BLOCK: Final = 4 * 1024 * 1024
_GEAR: Final = np.frombuffer(
    b"".join(hashlib.sha256(b"edgefleet-gear-%d" % i).digest()[:4] for i in range(256)), dtype=">u4"
).astype(np.uint32)


def _candidates(data: np.ndarray) -> np.ndarray:
    """End offsets (exclusive) after which the rolling gear hash allows a cut."""
    found = []
    for start in range(0, len(data), _BLOCK):
        lead = max(0, start - (_WINDOW - 1))  # the window reaches back into the previous block
        block = data[lead : start + _BLOCK]
        gears = _GEAR[block]
        rolling = np.zeros(len(block), dtype=np.uint32)
        for lag in range(min(_WINDOW, len(block))):
            rolling[lag:] += gears[: len(block) - lag] << np.uint32(lag)
        hits = np.flatnonzero((rolling >> np.uint32(32 - _MASK_BITS)) == 0) + lead + 1
        found.append(hits[hits > start])
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def cut_points(data: bytes | memoryview) -> list[int]:
    """End offsets of the pieces of ``data``; the last is ``len(data)``."""
    array = np.frombuffer(data, dtype=np.uint8)
    candidates = _candidates(array)
    cuts: list[int] = []
    start, size = 0, len(array)
    while start < size:
        at = int(np.searchsorted(candidates, start + MIN_PIECE))
        end = int(candidates[at]) if at < len(candidates) else size
        end = min(end, start + MAX_PIECE, size)
        cuts.append(end)
        start = end
    return cuts


def chunk_index(data: bytes | memoryview) -> ChunkIndex:
    """The content-defined chunk index of ``data``."""
    return ChunkIndex.of(data, cut_points(data))
