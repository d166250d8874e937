"""Test choice and drift of features, cohorts and reports (fleet/drift/compare.py), with Benjamini-Hochberg."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from fleet._stats import benjamini_hochberg
from fleet.drift import (
    DriftConfig,
    DriftTest,
    FeatureKind,
    analyse_drift,
    category_counts,
    chi_square_counts,
    compare_counts,
    compare_sketches,
    ks_sketches,
    z_test_counts,
)
from fleet.telemetry import TelemetryAggregate
from fleet.wire.sketches import (
    merge_sketches,
    sketch_from_values,
)


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
