"""`sketch_of_sorted` (fleet/wire/kll_sorted.py): a valid KLL sketch of the values, every rank within the bound
its docstring states, usable like any other sketch; `sketch_of_values` for values in any order (many sorted in
runs whose sketches merge), within datasketches' own bound."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketches import kll_floats_sketch

from fleet.wire.kll_sorted import _ONE_SORT_UP_TO, _SORT_RUN, sketch_of_sorted, sketch_of_values
from fleet.wire.sketches import _check_kll_bytes, new_sketch


@pytest.mark.parametrize(("n", "seed"), [(801, 1), (4_097, 2), (40_000, 3), (250_001, 4)])
def test_every_rank_is_within_two_n_over_k_and_the_sketch_is_well_formed(n: int, seed: int) -> None:
    values = np.sort(np.random.default_rng(seed).lognormal(size=n).astype(np.float32))
    sketch = sketch_of_sorted(values, 200, random.Random(seed))
    _check_kll_bytes(sketch.serialize())  # what the hub demands of a device's sketch
    assert (sketch.n, sketch.get_min_value(), sketch.get_max_value()) == (n, values[0], values[-1])
    assert sketch.num_retained <= 3 * 200  # compacted, not every value
    probes = values[:: max(1, n // 2000)]
    estimated = np.array([sketch.get_rank(float(x)) for x in probes]) * n  # rank counting values <= x
    exact = np.searchsorted(values, probes, side="right")
    assert np.abs(estimated - exact).max() < 2 * n / 200


def test_few_values_go_to_datasketches_as_they_are_and_the_result_merges_like_any_sketch() -> None:
    values = np.sort(np.random.default_rng(5).normal(size=150).astype(np.float32))
    exact = sketch_of_sorted(values, 200)
    reference = new_sketch(200)
    reference.update(values)
    assert exact.serialize() == reference.serialize()
    big = sketch_of_sorted(np.sort(np.random.default_rng(6).normal(size=50_000).astype(np.float32)), 200)
    merged = new_sketch(200)
    for part in (exact, big, kll_floats_sketch.deserialize(big.serialize())):
        merged.merge(part)
    assert merged.n == 150 + 2 * 50_000
    assert abs(merged.get_quantile(0.5)) < 0.05


@pytest.mark.parametrize("n", [_ONE_SORT_UP_TO + 1, 30 * _SORT_RUN + 77])
def test_values_in_any_order_are_sorted_in_runs_and_every_rank_is_within_datasketches_bound(n: int) -> None:
    values = np.random.default_rng(n).lognormal(size=n).astype(np.float32)
    ordered = np.sort(values)
    bound = kll_floats_sketch.get_normalized_rank_error(200, False) * n  # 1.33% of n, 99% confidence
    for seed in range(3):
        sketch = sketch_of_values(values, 200, random.Random(seed))
        _check_kll_bytes(sketch.serialize())
        assert (sketch.n, sketch.get_min_value(), sketch.get_max_value()) == (n, ordered[0], ordered[-1])
        assert sketch.num_retained <= 3 * 200
        probes = ordered[:: n // 2000]
        estimated = np.array([sketch.get_rank(float(x)) for x in probes]) * n
        assert np.abs(estimated - np.searchsorted(ordered, probes, side="right")).max() < bound


def test_up_to_one_sort_of_values_is_the_sketch_of_them_sorted() -> None:
    values = np.random.default_rng(8).normal(size=_ONE_SORT_UP_TO).astype(np.float32)
    by_values = sketch_of_values(values, 200, random.Random(9))
    assert by_values.serialize() == sketch_of_sorted(np.sort(values), 200, random.Random(9)).serialize()
