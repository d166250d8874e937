"""Drift statistics from sketches agree with scipy on the raw data (fleet/drift/statistics.py).

How closely, with k=200 sketches (the agent's default):

- exact sketches (n <= k, not in estimation mode): KS statistic and p-value, Wasserstein, PSI, Jensen-Shannon
  and chi-square are equal to scipy on the raw values (to float rounding);
- 100 devices x 500 values merged per side (estimation mode): the KS distance is within the sketches'
  combined normalised rank error (about 0.027) of ``scipy.stats.ks_2samp``; the conservative p-value is
  never smaller than scipy's; normed Wasserstein within 0.05, PSI and Jensen-Shannon within 0.02 of the
  raw-data values on the same bins.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from fleet.drift import (
    DriftTest,
    compare_sketches,
    jensen_shannon_sketches,
    ks_sketches,
    psi_sketches,
    wasserstein_sketches,
)
from fleet.wire.sketches import (
    merge_sketches,
    serialize_sketch,
    sketch_from_values,
)


def _raw_binned(ref: np.ndarray, cur: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=edges.size + 1) / ref.size
    c = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=edges.size + 1) / cur.size
    return r, c


def _raw_psi(r: np.ndarray, c: np.ndarray) -> float:
    r, c = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)
    return float(np.sum((r - c) * np.log(r / c)))


def _device_sketches(values: np.ndarray, devices: int) -> str:
    """Sketch each device's share separately and merge them, as the hub does."""
    return serialize_sketch(
        merge_sketches(serialize_sketch(sketch_from_values(p)) for p in np.array_split(values, devices))
    )


class TestExactSketchesEqualScipy:
    def setup_method(self) -> None:
        rng = np.random.default_rng(10)
        self.ref = rng.normal(0, 1, 150).astype(np.float32)
        self.cur = rng.normal(0.3, 1.2, 180).astype(np.float32)
        self.sref, self.scur = sketch_from_values(self.ref), sketch_from_values(self.cur)
        assert not self.sref.is_estimation_mode() and not self.scur.is_estimation_mode()

    def test_ks(self) -> None:
        ks = ks_sketches(self.sref, self.scur)
        expected = stats.ks_2samp(self.ref, self.cur)
        assert ks.exact and ks.error_bound == 0
        assert ks.statistic == pytest.approx(expected.statistic, abs=1e-12)
        assert ks.p_value == pytest.approx(expected.pvalue, rel=1e-9)

    def test_wasserstein_normed_like_evidently(self) -> None:
        expected = stats.wasserstein_distance(self.ref, self.cur) / np.std(self.ref.astype(np.float64))
        assert wasserstein_sketches(self.sref, self.scur) == pytest.approx(expected, rel=1e-6)

    def test_psi_and_jensen_shannon_on_reference_deciles(self) -> None:
        edges = np.unique(np.asarray(self.sref.get_quantiles([i / 10 for i in range(1, 10)]), dtype=np.float64))
        r, c = _raw_binned(self.ref, self.cur, edges)
        assert psi_sketches(self.sref, self.scur) == pytest.approx(_raw_psi(r, c), rel=1e-6)
        assert jensen_shannon_sketches(self.sref, self.scur) == pytest.approx(distance.jensenshannon(r, c), rel=1e-6)

    def test_small_reference_picks_ks_and_decides_on_its_p_value(self) -> None:
        result = compare_sketches("x", self.sref, self.scur)
        assert result.test == DriftTest.KS
        assert result.p_value == pytest.approx(stats.ks_2samp(self.ref, self.cur).pvalue, rel=1e-9)
        assert result.p_value is not None and result.drifted == (result.p_value < 0.05)


@pytest.mark.parametrize(
    ("seed", "make"),
    [
        (1, lambda rng, n: (rng.normal(0, 1, n), rng.normal(0.05, 1, n))),  # small shift
        (2, lambda rng, n: (rng.lognormal(0, 0.5, n), rng.lognormal(0, 0.6, n))),  # skewed, wider
        (3, lambda rng, n: (rng.uniform(0, 10, n), rng.uniform(0, 10, n))),  # no drift
    ],
)
def test_merged_sketches_agree_with_scipy_on_raw_data(seed: int, make: Callable[..., tuple[np.ndarray, ...]]) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = (a.astype(np.float32) for a in make(rng, 50_000))
    from fleet.wire.sketches import deserialize_sketch

    sref, scur = (
        deserialize_sketch(_device_sketches(ref, 100)),
        deserialize_sketch(_device_sketches(cur, 100)),
    )
    assert sref.is_estimation_mode()

    ks = ks_sketches(sref, scur)
    raw = stats.ks_2samp(ref, cur)
    assert abs(ks.statistic - raw.statistic) <= ks.error_bound
    assert 0.02 < ks.error_bound < 0.03  # 2 x 1.33% for k=200
    assert ks.p_value >= raw.pvalue * (1 - 1e-9)  # sketch error never makes drift look more certain

    w_raw = stats.wasserstein_distance(ref, cur) / np.std(ref.astype(np.float64))
    assert wasserstein_sketches(sref, scur) == pytest.approx(w_raw, abs=0.05)

    edges = np.unique(np.asarray(sref.get_quantiles([i / 10 for i in range(1, 10)]), dtype=np.float64))
    r, c = _raw_binned(ref, cur, edges)
    assert psi_sketches(sref, scur) == pytest.approx(_raw_psi(r, c), abs=0.02)
    assert jensen_shannon_sketches(sref, scur) == pytest.approx(distance.jensenshannon(r, c), abs=0.02)
