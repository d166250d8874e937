"""The statistics drift is decided on, from merged KLL sketches (numerical features) and from counts
(categories, predictions, confidence buckets): KS with sketch error, Wasserstein, PSI, Jensen-Shannon,
chi-square and the two-proportion z-test."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from datasketches import kll_floats_sketch
from pydantic import BaseModel, ConfigDict
from scipy import stats
from scipy.spatial import distance

from fleet._stats import two_proportion_z
from fleet.errors import FleetConfigError
from fleet.wire.sketches import sketch_items

_PSI_EMPTY_BIN = 1e-4  # Evidently's floor for empty bins


def _rank_error(sk: kll_floats_sketch) -> float:
    return float(sk.normalized_rank_error(False)) if sk.is_estimation_mode() else 0.0


def _ecdf(items: np.ndarray, weights: np.ndarray, points: np.ndarray) -> np.ndarray:
    cum = np.concatenate(([0], np.cumsum(weights)))
    return cum[np.searchsorted(items, points, side="right")] / cum[-1]


class KSResult(BaseModel):
    """Two-sample KS from sketches: ``statistic`` is D read from the sketches; D on the raw data lies in
    ``[statistic - error_bound, statistic + error_bound]`` (99% per-sketch confidence)."""

    model_config = ConfigDict(frozen=True)

    statistic: float
    error_bound: float
    p_value: float
    """p at ``max(0, D - error_bound)``: sketch noise alone does not make it small."""
    p_value_uncorrected: float
    """p at D, ignoring sketch error."""
    exact: bool


_KSTWO_MAX_N = 10_000


def _ks_sf(d: float, en: int) -> float:
    """P(D >= d) for the two-sample KS with effective size ``en``: scipy's ``kstwo`` as ``ks_2samp``'s
    asymptotic method uses, or the limiting Kolmogorov distribution above 10,000 (where they agree to
    about 1e-3 and ``kstwo`` gets slow)."""
    if d <= 0:
        return 1.0
    if en <= _KSTWO_MAX_N:
        return float(stats.kstwo.sf(d, en))
    return float(stats.kstwobign.sf(d * math.sqrt(en)))


def ks_sketches(reference: kll_floats_sketch, current: kll_floats_sketch) -> KSResult:
    """Two-sample Kolmogorov-Smirnov between two KLL sketches, accounting for their rank error.

    Two exact sketches (not in estimation mode) hold every value, and the result is
    ``scipy.stats.ks_2samp`` on them; otherwise D is the largest CDF gap over the retained items and the
    p-value uses scipy's asymptotic distribution with the true sample sizes.
    """
    if reference.is_empty() or current.is_empty():
        raise FleetConfigError("KS needs two non-empty sketches")
    ref_items, ref_w = sketch_items(reference)
    cur_items, cur_w = sketch_items(current)
    exact = not reference.is_estimation_mode() and not current.is_estimation_mode()
    if exact:
        res = stats.ks_2samp(np.repeat(ref_items, ref_w), np.repeat(cur_items, cur_w))
        d, p = float(res.statistic), float(res.pvalue)
        return KSResult(statistic=d, error_bound=0.0, p_value=p, p_value_uncorrected=p, exact=True)
    points = np.union1d(ref_items, cur_items)
    d = float(np.max(np.abs(_ecdf(ref_items, ref_w, points) - _ecdf(cur_items, cur_w, points))))
    eps = _rank_error(reference) + _rank_error(current)
    en = round(reference.n * current.n / (reference.n + current.n))
    p_raw, p_low = _ks_sf(d, en), _ks_sf(max(0.0, d - eps), en)
    return KSResult(statistic=d, error_bound=eps, p_value=p_low, p_value_uncorrected=p_raw, exact=False)


def wasserstein_sketches(reference: kll_floats_sketch, current: kll_floats_sketch, *, normed: bool = True) -> float:
    """First Wasserstein distance between the sketched distributions, divided by the reference standard
    deviation (at least 0.001) when ``normed``, as Evidently's ``wasserstein`` test."""
    ref_items, ref_w = sketch_items(reference)
    cur_items, cur_w = sketch_items(current)
    if ref_items.size == 0 or cur_items.size == 0:
        raise FleetConfigError("Wasserstein needs two non-empty sketches")
    wd = float(stats.wasserstein_distance(ref_items, cur_items, ref_w, cur_w))
    if not normed:
        return wd
    mean = np.average(ref_items, weights=ref_w)
    std = math.sqrt(float(np.average((ref_items - mean) ** 2, weights=ref_w)))
    return wd / max(std, 0.001)


def _quantile_edges(reference: kll_floats_sketch, bins: int) -> np.ndarray:
    qs = reference.get_quantiles([i / bins for i in range(1, bins)])
    return np.unique(np.asarray(qs, dtype=np.float64))


def _binned(reference: kll_floats_sketch, current: kll_floats_sketch, bins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = _quantile_edges(reference, bins)
    if edges.size == 0:
        return np.ones(1), np.ones(1)
    # inclusive=True: bucket i is (edge[i-1], edge[i]], the same as np.searchsorted(edges, x, "left")
    ref = np.asarray(reference.get_pmf(edges.tolist(), True), dtype=np.float64)
    cur = np.asarray(current.get_pmf(edges.tolist(), True), dtype=np.float64)
    return np.clip(ref, 0, None), np.clip(cur, 0, None)


def _psi(ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    ref = np.where(ref_p <= 0, _PSI_EMPTY_BIN, ref_p)
    cur = np.where(cur_p <= 0, _PSI_EMPTY_BIN, cur_p)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def _js(ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    if ref_p.sum() <= 0 or cur_p.sum() <= 0:
        return math.nan
    return float(distance.jensenshannon(ref_p, cur_p))


def psi_sketches(reference: kll_floats_sketch, current: kll_floats_sketch, bins: int = 10) -> float:
    """Population stability index over ``bins`` reference-quantile bins (empty bins floored at 1e-4)."""
    return _psi(*_binned(reference, current, bins))


def jensen_shannon_sketches(reference: kll_floats_sketch, current: kll_floats_sketch, bins: int = 10) -> float:
    """Jensen-Shannon distance (natural log, as scipy) over ``bins`` reference-quantile bins."""
    return _js(*_binned(reference, current, bins))


def category_counts(sketch: kll_floats_sketch) -> dict[str, float]:
    """Estimated count per distinct value of a sketched categorical feature (codes as text keys).
    Exact while the sketch is not in estimation mode."""
    items, weights = sketch_items(sketch)
    out: dict[str, float] = {}
    for value, weight in zip(items.tolist(), weights.tolist(), strict=True):
        key = _category_key(value)
        out[key] = out.get(key, 0.0) + weight
    return out


def _category_key(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# ------------------------------------------------------------------------------------- count statistics


def aligned_counts(
    reference: Mapping[str, float], current: Mapping[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The categories counted on either side (sorted) and both sides' counts over them, zeros filled in."""
    keys = sorted(k for k in set(reference) | set(current) if reference.get(k, 0) > 0 or current.get(k, 0) > 0)
    ref = np.array([float(reference.get(k, 0.0)) for k in keys])
    cur = np.array([float(current.get(k, 0.0)) for k in keys])
    return keys, ref, cur


def chi_square_counts(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[float, float]:
    """Chi-square test of homogeneity of two category-count tables: ``(statistic, p_value)``, as
    ``scipy.stats.chi2_contingency(..., correction=False)``. A single category gives ``(0, 1)``."""
    _, ref, cur = aligned_counts(reference, current)
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise FleetConfigError("chi-square needs counts on both sides")
    if ref.size < 2:
        return 0.0, 1.0
    res = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    return float(res.statistic), float(res.pvalue)


def z_test_counts(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[float, float]:
    """Two-proportion z-test on the share of the first category (sorted keys), as Evidently's ``z``
    test; ``(z, p_value)``. Counts are rounded to whole observations."""
    keys, ref, cur = aligned_counts(reference, current)
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise FleetConfigError("z-test needs counts on both sides")
    if len(keys) < 2:
        return 0.0, 1.0
    res = two_proportion_z(round(ref[0]), round(ref.sum()), round(cur[0]), round(cur.sum()))
    return res.z, res.p_value


def psi_counts(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """PSI between two category-count tables (empty categories floored at 1e-4)."""
    _, ref, cur = aligned_counts(reference, current)
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise FleetConfigError("PSI needs counts on both sides")
    return _psi(ref / ref.sum(), cur / cur.sum())


def jensen_shannon_counts(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (natural log) between two category-count tables."""
    _, ref, cur = aligned_counts(reference, current)
    return _js(ref, cur)
