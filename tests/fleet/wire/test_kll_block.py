"""Many KLL sketches checked at once (fleet/wire/kll_block.py): every sketch datasketches writes passes, every
corruption `deserialize_sketch` refuses is refused too, and never the other way round for what it accepts."""

from __future__ import annotations

import base64
import itertools
import random
import struct

import numpy as np
import pytest
from datasketches import kll_floats_sketch

from fleet.errors import ProtocolError
from fleet.wire.kll_block import check_kll_block
from fleet.wire.sketches import deserialize_sketch


def _valid() -> list[bytes]:
    rng = np.random.default_rng(7)
    out = []
    for n in (0, 1, 2, 7, 199, 200, 201, 3000, 60_000):
        for k in (8, 200):
            sketch = kll_floats_sketch(k)
            if n:
                sketch.update(rng.normal(size=n).astype(np.float32))
            out.append(sketch.serialize())
            if n > 1:
                merged = kll_floats_sketch(k)
                merged.merge(sketch)
                merged.update(0.5)
                out.append(merged.serialize())
    return out


VALID = _valid()


def _reference_accepts(raw: bytes) -> bool:
    try:
        deserialize_sketch(base64.b64encode(raw).decode())
    except ProtocolError:
        return False
    return True


def _set(raw: bytes, fmt: str, offset: int, value: float | int) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_every_sketch_datasketches_writes_passes_and_exact_ones_hand_out_their_values() -> None:
    block = check_kll_block(VALID)
    assert block.ok.all()
    for index, raw in enumerate(VALID):
        sketch = kll_floats_sketch.deserialize(raw)
        assert block.exact[index] == (not sketch.is_estimation_mode())
        if block.exact[index]:
            items = np.sort(block.items(index))
            assert items.size == sketch.n
            if sketch.n:
                assert (items[0], items[-1]) == (sketch.get_min_value(), sketch.get_max_value())


def _corruptions() -> dict[str, bytes]:
    exact = kll_floats_sketch(200)
    exact.update(np.arange(20, dtype=np.float32))
    small = exact.serialize()
    estimating = kll_floats_sketch(200)
    estimating.update(np.random.default_rng(3).normal(size=5000).astype(np.float32))
    big = estimating.serialize()
    levels = big[18]
    items_at = 20 + 4 * levels + 8
    offsets = struct.unpack_from(f"<{levels}I", big, 20)
    # the first two items of the first level above 0 holding two or more (levels above 0 are sorted)
    start = next(a for a, b in itertools.pairwise(offsets[1:]) if b - a >= 2)
    first = items_at + 4 * (start - offsets[0])
    swap = bytearray(big)
    swap[first : first + 4], swap[first + 4 : first + 8] = big[first + 4 : first + 8], big[first : first + 4]
    return {
        "truncated": big[:-4],
        "one byte more": big + b"\x00",
        "not KLL": _set(big, "<B", 2, 7),
        "m other than 8": _set(big, "<B", 6, 4),
        "k below m": _set(big, "<H", 4, 4),
        "n off by one": _set(big, "<Q", 8, struct.unpack_from("<Q", big, 8)[0] - 1),
        "n zero": _set(small, "<Q", 8, 0),
        "level offset past the capacity": _set(big, "<I", 24, 10_000),
        "levels out of order": _set(big, "<I", 20, struct.unpack_from("<I", big, 24)[0] + 1),
        "no levels": _set(big, "<B", 18, 0),
        "NaN item": _set(big, "<f", len(big) - 4, float("nan")),
        "infinite item": _set(small, "<f", len(small) - 4, float("inf")),
        "NaN minimum": _set(big, "<f", items_at - 8, float("nan")),
        "minimum above maximum": _set(_set(big, "<f", items_at - 8, 9.0), "<f", items_at - 4, 1.0),
        "unsorted level": bytes(swap),
        "empty with items": VALID[0] + b"\x00\x00\x80\x3f",
        "single item NaN": _set(VALID[2], "<f", 8, float("nan")),
        "short preamble": big[:6],
    }


@pytest.mark.parametrize("name", sorted(_corruptions()))
def test_each_corruption_is_refused_by_the_block_and_by_deserialize_sketch(name: str) -> None:
    corrupt = _corruptions()[name]
    block = check_kll_block([VALID[5], corrupt, VALID[-1]])  # neighbours in the same block stay valid
    assert block.ok.tolist() == [True, False, True]
    assert not _reference_accepts(corrupt)


def test_what_the_block_accepts_deserialize_sketch_accepts_too() -> None:
    """Random byte edits of valid sketches, checked in blocks: never accepted by the block and refused by
    `deserialize_sketch` (the block may refuse more: those go to `deserialize_sketch`, which explains)."""
    rand = random.Random(11)

    def mutate(raw: bytes) -> bytes:
        out = bytearray(raw)
        where = rand.choice(["header", "levels", "values", "length"])
        if where == "length":
            return bytes(out[: rand.randrange(len(out))]) if rand.random() < 0.5 else bytes(out) + b"\x00" * 4
        if where == "header":
            at = rand.randrange(min(20, len(out)))
        elif where == "levels" and len(out) > 28:
            at = rand.randrange(20, min(len(out), 20 + 4 * out[18] + 8))
        else:
            at = rand.randrange(len(out))
        out[at] = rand.randrange(256)
        return bytes(out)

    mutated = [mutate(rand.choice(VALID)) for _ in range(1500)]
    refused = 0
    for start in range(0, len(mutated), 50):
        part = mutated[start : start + 50]
        for raw, ok in zip(part, check_kll_block(part).ok.tolist(), strict=True):
            reference = _reference_accepts(raw)
            assert reference or not ok, f"accepted what deserialize_sketch refuses: {list(raw[:40])}"
            refused += not ok
    assert refused > 300  # the edits did reach the checks
