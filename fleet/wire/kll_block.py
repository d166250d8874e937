"""Many serialised KLL float sketches checked at once, with numpy over their joined bytes.

`check_kll_block` makes the checks of `fleet.wire.sketches.deserialize_sketch` (layout, length, level offsets
against the capacity implied by k, weights adding up to n, no NaN or infinity, min <= max, sorted levels) on a
whole block of sketches in a fixed number of numpy passes, however many sketches and items there are. It also
refuses some valid but unusual sketches (more than 30 levels, a serial version datasketches 5 does not write):
a sketch it refuses goes to `deserialize_sketch`, which accepts it or says what is wrong. So a sketch it
accepts is one `deserialize_sketch` accepts, and the one-line refusals stay the same.

For sketches that hold every value they were fed (one level or a single item, every weight 1), the items are
handed out as float32 views, so that merging many of them is one sort and one bulk update.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from fleet.wire.sketches import (
    KLL_FAMILY,
    KLL_FLAG_EMPTY,
    KLL_FLAG_LEVEL_ZERO_SORTED,
    KLL_FLAG_SINGLE_ITEM,
    KLL_M,
    MAX_SKETCH_BYTES,
    kll_total_capacity,
)

__all__ = ["KllBlock", "check_kll_block"]

#: Beyond this many levels (n above 2^30 values) a sketch is left to `deserialize_sketch`; weights stay exact
#: in int64 below it.
_MAX_FAST_LEVELS: Final = 30
_PREAMBLE_WORDS: Final = 5  # full preamble: 20 bytes, then the level offsets


@dataclass(frozen=True)
class KllBlock:
    """What `check_kll_block` found, one entry per sketch in the order given."""

    ok: np.ndarray
    """Passes every check of `deserialize_sketch` (False: let `deserialize_sketch` decide and explain)."""
    exact: np.ndarray
    """``ok`` and every item has weight 1 (empty, a single item, or one level): its items are the values fed."""
    starts: np.ndarray
    ends: np.ndarray
    values: np.ndarray
    """The sketches' bytes joined, as float32; an exact sketch's items are ``values[starts[i]:ends[i]]``."""

    def items(self, index: int) -> np.ndarray:
        """The items of exact sketch ``index`` (a view, in the sketch's order)."""
        return self.values[self.starts[index] : self.ends[index]]


def _per_sketch(flags: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
    """Which of ``count`` sketches own at least one of the flagged entries."""
    hit = np.zeros(count, dtype=bool)
    hit[owner[flags]] = True
    return hit


def _spans(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every position of the spans [starts, starts + lengths) and the index of the span each belongs to."""
    lengths = np.maximum(lengths, 0)
    span = np.repeat(np.arange(starts.size), lengths)
    first = np.cumsum(lengths) - lengths
    return starts[span] + np.arange(span.size) - first[span], span


def check_kll_block(raws: Sequence[bytes]) -> KllBlock:
    """Check serialised KLL float sketches all at once (see the module docstring for what is checked)."""
    count = len(raws)
    lengths = np.fromiter(map(len, raws), dtype=np.int64, count=count)
    # every well-formed sketch is a whole number of 4-byte words; others are joined as nothing and refused
    aligned = (lengths % 4 == 0) & (lengths >= 8) & (lengths <= MAX_SKETCH_BYTES)
    if not aligned.all():
        raws = [raw if good else b"" for raw, good in zip(raws, aligned.tolist(), strict=True)]
        lengths = np.where(aligned, lengths, 0)
    joined = b"".join(raws)
    u32 = np.frombuffer(joined, dtype="<u4")
    values = np.frombuffer(joined, dtype="<f4")
    size = u32.size
    words = lengths // 4
    starts = np.cumsum(words) - words
    safe = np.where(aligned, starts, 0)

    def word(offset: int | np.ndarray, where: np.ndarray) -> np.ndarray:
        return np.where(where, u32[np.where(where, safe + offset, 0)] if size else 0, 0).astype(np.int64)

    head = word(0, aligned)
    preamble, serial, family, flags = head & 0xFF, (head >> 8) & 0xFF, (head >> 16) & 0xFF, head >> 24
    second = word(1, aligned)
    k, m = second & 0xFFFF, (second >> 16) & 0xFF
    base = aligned & (family == KLL_FAMILY) & (m == KLL_M) & (k >= KLL_M)
    empty = base & (flags & KLL_FLAG_EMPTY > 0)
    single = base & ~empty & (flags & KLL_FLAG_SINGLE_ITEM > 0)
    ok_empty = empty & (preamble == 2) & (serial == 1) & (lengths == 8)
    ok_single = single & (preamble == 2) & (serial == 2) & (lengths == 12)
    if ok_single.any():
        ok_single &= np.isfinite(values[np.where(ok_single, safe + 2, 0)])

    full = base & ~empty & ~single & (preamble == 5) & np.isin(serial, (1, 2)) & (lengths >= 32)
    n_low, n_high = word(2, full), word(3, full)
    levels_count = (word(4, full) >> 16) & 0xFF
    full &= (n_high == 0) & (n_low > 0) & (levels_count >= 1) & (levels_count <= _MAX_FAST_LEVELS)
    full &= lengths >= 4 * (_PREAMBLE_WORDS + levels_count + 2)
    idx = np.flatnonzero(full)
    ok_full = np.zeros(count, dtype=bool)
    exact = ok_empty | ok_single
    item_starts = np.where(ok_single, safe + 2, 0)
    item_ends = np.where(ok_single, safe + 3, 0)
    if idx.size:
        levels_n = levels_count[idx]
        capacity = _capacities(k[idx], levels_n)
        first = np.cumsum(levels_n) - levels_n  # position of each sketch's level 0 among all levels
        level_words, owner = _spans(safe[idx] + _PREAMBLE_WORDS, levels_n)
        depth = level_words - (safe[idx] + _PREAMBLE_WORDS)[owner]
        offsets = u32[level_words].astype(np.int64)
        upper = np.empty(owner.size, dtype=np.int64)  # each level's end: the next level's offset, or capacity
        upper[:-1] = offsets[1:]
        upper[first + levels_n - 1] = capacity
        sizes = upper - offsets
        level0 = offsets[first]
        items_at = safe[idx] + _PREAMBLE_WORDS + levels_n + 2  # after the offsets, min and max
        good = ~_per_sketch(sizes < 0, owner, idx.size)
        ends = safe[idx] + words[idx]
        good &= ends == items_at + (capacity - level0)
        weighted = np.where(sizes > 0, sizes, 0) << depth
        good &= np.add.reduceat(weighted, first) == n_low[idx]
        minimum, maximum = values[safe[idx] + _PREAMBLE_WORDS + levels_n], values[items_at - 1]
        good &= minimum <= maximum  # False for NaN too
        # every value (min, max, items) finite: the few non-finite words of the block, looked up in the regions
        nonfinite = np.flatnonzero(~np.isfinite(values))
        if nonfinite.size:
            region = np.searchsorted(items_at - 2, nonfinite, side="right") - 1
            inside = (region >= 0) & (nonfinite < ends[np.maximum(region, 0)])
            good &= ~_per_sketch(inside, np.maximum(region, 0), idx.size)
        # every level sorted, but an unsorted level 0: the pairs inside those levels, compared at once
        sorted_level = good[owner] & ((depth > 0) | (flags[idx][owner] & KLL_FLAG_LEVEL_ZERO_SORTED > 0))
        level_start = items_at[owner] + offsets - level0[owner]
        pairs, level = _spans(level_start[sorted_level], sizes[sorted_level] - 1)
        if pairs.size:
            good &= ~_per_sketch(values[pairs + 1] < values[pairs], owner[sorted_level][level], idx.size)
        ok_full[idx] = good
        one_level = ok_full[idx] & (levels_n == 1)
        exact[idx[one_level]] = True
        item_starts[idx[one_level]] = items_at[one_level]
        item_ends[idx[one_level]] = ends[one_level]
    return KllBlock(ok=ok_empty | ok_single | ok_full, exact=exact, starts=item_starts, ends=item_ends, values=values)


def _capacities(k: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Total capacity of each (k, levels) pair; the distinct pairs of a block are few."""
    keys = k * 64 + levels
    distinct, inverse = np.unique(keys, return_inverse=True)
    table = np.array([kll_total_capacity(int(key // 64), KLL_M, int(key % 64)) for key in distinct], dtype=np.int64)
    return table[inverse]
