"""Content-defined chunking: deterministic, bounded pieces, and an edit changes only the pieces around it."""

from __future__ import annotations

import numpy as np
import pytest

import hub.bundles.chunking as chunking
from hub.bundles.chunking import MAX_PIECE, MIN_PIECE, chunk_index, cut_points

DATA = np.random.default_rng(7).bytes(2_000_000)


def test_pieces_are_bounded_and_cover_the_file() -> None:
    cuts = cut_points(DATA)
    lengths = np.diff([0, *cuts])
    assert cuts[-1] == len(DATA)
    assert lengths[:-1].min() >= MIN_PIECE and lengths.max() <= MAX_PIECE
    assert 6 * 1024 < lengths.mean() < 14 * 1024


def test_a_long_run_of_equal_bytes_is_cut_at_the_maximum() -> None:
    assert set(np.diff([0, *cut_points(bytes(5 * MAX_PIECE))])) == {MAX_PIECE}


def test_an_edit_changes_only_the_pieces_around_it() -> None:
    edited = DATA[:700_000] + b"retrained" * 1000 + DATA[700_500:]
    before = {p.sha256 for p in chunk_index(DATA)}
    changed = [p for p in chunk_index(edited) if p.sha256 not in before]
    assert sum(p.length for p in changed) < 9_000 + 3 * MAX_PIECE
    assert all(600_000 < p.offset < 800_000 for p in changed)


def test_cuts_do_not_depend_on_the_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = cut_points(DATA)
    monkeypatch.setattr(chunking, "_BLOCK", 12_345)  # the gear window must straddle block edges
    assert cut_points(DATA) == expected


def test_the_index_is_deterministic_and_round_trips() -> None:
    index = chunk_index(DATA)
    assert index == chunk_index(DATA)
    assert type(index).decode(index.encode()) == index


def test_a_file_shorter_than_the_gear_window_is_one_piece() -> None:
    assert cut_points(b"small") == [5] and cut_points(b"") == []
