"""Drift from sketches agrees with scipy on the raw data (fleet/drift.py).

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

from fleet._stats import benjamini_hochberg
from fleet.drift import (
    CONFIDENCE,
    PREDICTIONS,
    DriftConfig,
    DriftReport,
    DriftTest,
    FeatureKind,
    analyse_drift,
    category_counts,
    chi_square_counts,
    compare_counts,
    compare_sketches,
    group_cohorts,
    jensen_shannon_sketches,
    ks_sketches,
    psi_sketches,
    wasserstein_sketches,
    z_test_counts,
)
from fleet.errors import FleetConfigError
from fleet.telemetry import ReferenceProfile, TelemetryAggregate
from fleet.wire.messages import TelemetryBatch
from fleet.wire.sketches import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS_MS,
    HistogramAccumulator,
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


def test_sketch_noise_alone_is_not_drift() -> None:
    rng = np.random.default_rng(11)
    ref, cur = rng.normal(size=400_000), rng.normal(size=400_000)
    sref, scur = sketch_from_values(ref), sketch_from_values(cur)
    ks = ks_sketches(sref, scur)
    assert ks.p_value > 0.05
    result = compare_sketches("x", sref, scur, DriftConfig(test=DriftTest.KS))
    assert result.drifted is False
    low, d, high = result.statistic_low, result.statistic, result.statistic_high
    assert low is not None and d is not None and high is not None and low < d < high  # sketch-error interval
    assert compare_sketches("x", sref, scur).drifted is False  # Wasserstein, the default at this size


def test_clear_shift_is_drift_with_either_test() -> None:
    rng = np.random.default_rng(12)
    sref, scur = sketch_from_values(rng.normal(0, 1, 50_000)), sketch_from_values(rng.normal(0.5, 1, 50_000))
    assert compare_sketches("x", sref, scur).test == DriftTest.WASSERSTEIN
    assert compare_sketches("x", sref, scur).drifted is True
    assert compare_sketches("x", sref, scur, DriftConfig(test=DriftTest.KS)).drifted is True
    psi = compare_sketches("x", sref, scur, DriftConfig(test=DriftTest.PSI))
    assert psi.test == DriftTest.PSI and psi.drifted is True


class TestCategorical:
    def test_few_values_small_sample_is_chi_square_equal_to_scipy(self) -> None:
        rng = np.random.default_rng(13)
        ref = rng.choice([0, 1, 2, 3], 190, p=[0.4, 0.3, 0.2, 0.1])  # n <= k: exact sketches
        cur = rng.choice([0, 1, 2, 3], 150, p=[0.2, 0.3, 0.2, 0.3])
        result = compare_sketches(
            "colour", sketch_from_values(ref), sketch_from_values(cur), DriftConfig(), FeatureKind.CATEGORICAL
        )
        table = np.vstack([np.bincount(ref, minlength=4), np.bincount(cur, minlength=4)])
        expected = stats.chi2_contingency(table, correction=False)
        assert result.test == DriftTest.CHI_SQUARE
        assert result.statistic == pytest.approx(expected.statistic, rel=1e-9)
        assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)

    def test_category_shares_from_merged_sketches_are_within_the_pmf_error(self) -> None:
        rng = np.random.default_rng(16)
        values = rng.choice([0, 1, 2, 3, 4], 60_000, p=[0.5, 0.2, 0.15, 0.1, 0.05])
        merged = merge_sketches(sketch_from_values(p) for p in np.array_split(values, 60))
        counts = category_counts(merged)
        shares = np.array([counts[str(v)] for v in range(5)]) / values.size
        raw = np.bincount(values, minlength=5) / values.size
        assert np.max(np.abs(shares - raw)) <= merged.normalized_rank_error(True)

    def test_binary_small_sample_is_z_test(self) -> None:
        ref = {"0": 300.0, "1": 200.0}
        cur = {"0": 250.0, "1": 250.0}
        z, p = z_test_counts(ref, cur)
        chi2 = stats.chi2_contingency(np.array([[300, 200], [250, 250]]), correction=False)
        assert z**2 == pytest.approx(chi2.statistic, rel=1e-9)
        assert p == pytest.approx(chi2.pvalue, rel=1e-9)
        assert compare_counts("flag", ref, cur).test == DriftTest.Z

    def test_large_sample_is_jensen_shannon(self) -> None:
        ref = {"a": 5000.0, "b": 3000.0, "c": 2000.0}
        cur = {"a": 2000.0, "b": 3000.0, "c": 5000.0}
        result = compare_counts("label", ref, cur)
        assert result.test == DriftTest.JENSEN_SHANNON
        assert result.statistic == pytest.approx(distance.jensenshannon([5, 3, 2], [2, 3, 5]))
        assert result.drifted is True

    def test_new_category_does_not_break_chi_square(self) -> None:
        stat, p = chi_square_counts({"a": 100.0, "b": 100.0}, {"a": 90.0, "b": 90.0, "c": 20.0})
        assert np.isfinite(stat) and p < 0.001

    def test_categorical_feature_cannot_be_forced_to_ks(self) -> None:
        with pytest.raises(ValueError, match="categorical"):
            DriftConfig(feature_tests={"c": DriftTest.KS}, feature_kinds={"c": FeatureKind.CATEGORICAL})


class TestBenjaminiHochberg:
    def test_hand_computed_case(self) -> None:
        p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205]
        # p_(i) * m / i = .008 .032 .104 .082 .0672 .08 .08457 .205; then running minimum from the right
        expected = [0.008, 0.032, 0.0672, 0.0672, 0.0672, 0.08, 0.074 * 8 / 7, 0.205]
        assert benjamini_hochberg(p) == pytest.approx(expected)
        assert benjamini_hochberg(p) == pytest.approx(list(stats.false_discovery_control(p)))
        # shuffled input keeps input order; None is skipped and not counted
        assert benjamini_hochberg([0.041, None, 0.001]) == pytest.approx([0.041, None, 0.002])

    def test_report_corrects_across_cohorts_and_features(self) -> None:
        rng = np.random.default_rng(14)
        n = 400  # small reference: KS, chi-square -> p-values
        reference = TelemetryAggregate()
        for f in ("a", "b", "c", "d"):
            reference.sketches[f] = sketch_from_values(rng.normal(size=n))
        cohorts = {}
        for name, shift in (("rpi", 0.0), ("jetson", 0.0), ("coral", 0.5)):
            agg = TelemetryAggregate()
            for f in ("a", "b", "c", "d"):
                agg.sketches[f] = sketch_from_values(rng.normal(shift if f == "a" else 0.0, 1, n))
            cohorts[name] = agg
        report = analyse_drift(reference, cohorts)
        results = [r for c in report.cohorts for r in c.features]
        assert report.corrected_tests == 12
        q = benjamini_hochberg([r.p_value for r in results])
        assert [r.p_adjusted for r in results] == pytest.approx(q)
        assert all(r.p_adjusted is not None and r.drifted == (r.p_adjusted < 0.05) for r in results)
        coral = next(c for c in report.cohorts if c.cohort == "coral")
        assert next(f for f in coral.features if f.feature == "a").drifted is True
        uncorrected = analyse_drift(reference, cohorts, DriftConfig(fdr_correction=False))
        flagged_raw = sum(bool(r.drifted) for c in uncorrected.cohorts for r in c.features)
        flagged_bh = sum(bool(r.drifted) for r in results)
        assert flagged_bh <= flagged_raw


def _batch(device: str, target: str, rng: np.random.Generator, *, shift: float, dog: float) -> TelemetryBatch:
    n = 300
    conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    conf.observe_many(np.clip(rng.normal(0.85 - shift / 4, 0.05, n), 0, 1))
    lat = HistogramAccumulator(LATENCY_BUCKETS_MS)
    lat.observe_many(rng.lognormal(3, 0.3, n))
    dogs = int(n * dog)
    return TelemetryBatch(
        batch_id=f"b-{device}-{int(rng.integers(1 << 30))}",
        device_id=device,
        target=target,
        model="digits",
        version="2.0",
        window_start=0,
        window_end=60,
        requests=n,
        errors=0,
        latency_ms=lat.to_histogram(),
        confidence=conf.to_histogram(),
        predictions={"cat": n - dogs, "dog": dogs},
        feature_sketches={
            "x": serialize_sketch(sketch_from_values(rng.normal(shift, 1, n))),
            "y": serialize_sketch(sketch_from_values(rng.uniform(0, 1, n))),
        },
    )


def test_cohorts_predictions_and_confidence_from_batches() -> None:
    rng = np.random.default_rng(15)
    ref_conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    ref_conf.observe_many(np.clip(rng.normal(0.85, 0.05, 5000), 0, 1))
    reference = ReferenceProfile(
        feature_sketches={
            "x": serialize_sketch(sketch_from_values(rng.normal(0, 1, 5000))),
            "y": serialize_sketch(sketch_from_values(rng.uniform(0, 1, 5000))),
        },
        predictions={"cat": 4000, "dog": 1000},
        confidence=ref_conf.to_histogram(),
    )
    batches = [_batch(f"rpi-{i}", "rpi4-arm64", rng, shift=0.0, dog=0.2) for i in range(10)]
    batches += [_batch(f"jet-{i}", "jetson-orin", rng, shift=1.0, dog=0.5) for i in range(10)]
    labels = {f"rpi-{i}": {"region": "eu"} for i in range(10)} | {f"jet-{i}": {"region": "us"} for i in range(10)}
    cohorts = group_cohorts(batches, by=["target"], selectors={"eu": "region=eu"}, device_labels=labels)
    assert set(cohorts) == {"all", "target=rpi4-arm64", "target=jetson-orin", "eu"}
    assert cohorts["eu"].devices == {f"rpi-{i}" for i in range(10)}
    report = analyse_drift(reference, cohorts, model="digits", version="2.0")
    by_name = {c.cohort: c for c in report.cohorts}
    rpi, jetson = by_name["target=rpi4-arm64"], by_name["target=jetson-orin"]
    assert rpi.dataset_drift is False and jetson.dataset_drift is True
    assert [f.feature for f in jetson.features if f.drifted] == ["x"]
    assert jetson.predictions is not None and jetson.predictions.drifted is True
    assert jetson.predictions.feature == PREDICTIONS
    assert rpi.predictions is not None and rpi.predictions.drifted is False
    assert jetson.confidence is not None and jetson.confidence.feature == CONFIDENCE
    assert jetson.confidence.drifted is True and rpi.confidence is not None and rpi.confidence.drifted is False
    assert "target=jetson-orin" in report.drifted_cohorts and "target=rpi4-arm64" not in report.drifted_cohorts
    again = DriftReport.model_validate_json(report.model_dump_json())
    assert again.cohorts[0].features[0].feature == report.cohorts[0].features[0].feature
    assert {row["drift"] for row in report.rows()} <= {"DRIFT", "ok"}


def test_thin_and_missing_data_are_reported_not_tested() -> None:
    reference = TelemetryAggregate()
    reference.sketches["x"] = sketch_from_values(np.arange(1000.0))
    reference.sketches["gone"] = sketch_from_values(np.arange(1000.0))
    current = TelemetryAggregate()
    current.sketches["x"] = sketch_from_values(np.arange(10.0))
    report = analyse_drift(reference, {"c": current})
    results = {f.feature: f for f in report.cohorts[0].features}
    assert results["x"].status == "insufficient_data" and results["x"].drifted is None
    assert results["gone"].status == "missing" and results["gone"].drifted is None
    assert report.cohorts[0].dataset_drift is None
    assert report.corrected_tests == 0


def test_unknown_cohort_dimension_is_refused() -> None:
    with pytest.raises(FleetConfigError, match="dimension"):
        group_cohorts([], by=["colour"])
