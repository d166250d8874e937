"""`sketch_of_sorted` (fleet/wire/kll_sorted.py): a valid KLL sketch of the values, every rank within the bound
its docstring states, usable like any other sketch."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketches import kll_floats_sketch

from fleet.wire.kll_sorted import sketch_of_sorted
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
