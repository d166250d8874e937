"""Histograms, KLL sketches and feature sketching on the device (fleet/wire/sketches.py)."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fleet.errors import FleetConfigError, ProtocolError
from fleet.wire.messages import Histogram
from fleet.wire.sketches import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS_MS,
    FeatureSketcher,
    HistogramAccumulator,
    deserialize_sketch,
    histogram_mean,
    histogram_quantile,
    merge_histograms,
    merge_sketches,
    serialize_sketch,
    sketch_from_values,
    sketch_items,
)


class TestHistograms:
    def test_values_on_an_edge_fall_in_that_bucket_and_large_ones_overflow(self) -> None:
        acc = HistogramAccumulator([1.0, 2.0, 5.0])
        acc.observe_many([0.2, 1.0, 1.5, 2.0, 5.0, 7.0, float("nan")])
        hist = acc.to_histogram()
        assert hist.counts == [2, 2, 1, 1]
        assert hist.total == pytest.approx(0.2 + 1.0 + 1.5 + 2.0 + 5.0 + 7.0)
        assert acc.count == 6

    def test_counts_agree_with_numpy(self) -> None:
        values = np.random.default_rng(1).lognormal(3, 1, 5000)
        acc = HistogramAccumulator(LATENCY_BUCKETS_MS)
        acc.observe_many(values)
        expected = np.bincount(np.searchsorted(LATENCY_BUCKETS_MS, values, side="left"), minlength=23)
        assert acc.to_histogram().counts == expected.tolist()

    def test_merge_adds_counts_and_totals(self) -> None:
        a, b = HistogramAccumulator(CONFIDENCE_BUCKETS), HistogramAccumulator(CONFIDENCE_BUCKETS)
        a.observe_many([0.1, 0.5])
        b.observe_many([0.5, 0.99])
        merged = merge_histograms([a.to_histogram(), b.to_histogram()])
        assert merged is not None
        assert sum(merged.counts) == 4
        assert merged.total == pytest.approx(2.09)
        assert merge_histograms([]) is None

    def test_mismatched_edges_are_refused(self) -> None:
        acc = HistogramAccumulator([1.0, 2.0])
        with pytest.raises(ProtocolError, match="edges differ"):
            acc.add(Histogram(edges=[1.0, 3.0], counts=[0, 0, 0]))
        with pytest.raises(ProtocolError, match="counts"):
            acc.add(Histogram(edges=[1.0, 2.0], counts=[0, 0]))
        with pytest.raises(FleetConfigError):
            HistogramAccumulator([2.0, 1.0])

    def test_quantile_interpolates_within_one_bucket_of_numpy(self) -> None:
        values = np.random.default_rng(2).uniform(0, 1, 20000)
        acc = HistogramAccumulator(CONFIDENCE_BUCKETS)
        acc.observe_many(values)
        hist = acc.to_histogram()
        for q in (0.1, 0.5, 0.9, 0.99):
            assert histogram_quantile(hist, q) == pytest.approx(np.quantile(values, q), abs=0.01)
        assert histogram_mean(hist) == pytest.approx(values.mean())
        empty = HistogramAccumulator([1.0]).to_histogram()
        assert np.isnan(histogram_quantile(empty, 0.5))


class TestSketches:
    def test_round_trip_keeps_the_distribution(self) -> None:
        values = np.random.default_rng(3).normal(size=10000)
        sk = sketch_from_values(values)
        back = deserialize_sketch(serialize_sketch(sk))
        assert back.n == 10000
        assert back.get_quantile(0.5) == sk.get_quantile(0.5)

    def test_exact_sketch_holds_every_value(self) -> None:
        values = np.arange(50, dtype=np.float32)
        items, weights = sketch_items(sketch_from_values(values[::-1]))
        assert items.tolist() == values.tolist()
        assert weights.tolist() == [1] * 50

    def test_weights_of_merged_sketches_add_up_to_n(self) -> None:
        # datasketches' own iterator reports weight 1 for every item of this merged sketch
        values = np.random.default_rng(16).choice([0, 1, 2, 3, 4], 60_000)
        merged = merge_sketches(sketch_from_values(p) for p in np.array_split(values, 60))
        items, weights = sketch_items(merged)
        assert int(weights.sum()) == merged.n == 60_000
        assert np.all(np.diff(items) >= 0)
        share_of_zero = weights[items == 0].sum() / merged.n
        assert abs(share_of_zero - np.mean(values == 0)) <= merged.normalized_rank_error(True)

    def test_merged_device_sketches_match_one_sketch_of_all_values(self) -> None:
        rng = np.random.default_rng(4)
        parts = [rng.normal(size=1000) for _ in range(50)]
        merged = merge_sketches(serialize_sketch(sketch_from_values(p)) for p in parts)
        everything = np.concatenate(parts)
        assert merged.n == everything.size
        eps = merged.normalized_rank_error(False)
        for q in (0.05, 0.5, 0.95):
            # the rank of the sketch's quantile in the raw data is within the rank error
            rank = np.mean(everything <= merged.get_quantile(q))
            assert abs(rank - q) <= eps

    @pytest.mark.parametrize(
        "text",
        [
            "not base64!",
            base64.b64encode(b"\x00" * 7).decode(),
            base64.b64encode(b"\x05\x01\x10\x00" * 10).decode(),
        ],
    )
    def test_garbage_is_a_protocol_error(self, text: str) -> None:
        with pytest.raises(ProtocolError):
            deserialize_sketch(text)

    def test_oversized_sketch_is_refused(self) -> None:
        with pytest.raises(ProtocolError, match="exceeds"):
            deserialize_sketch("A" * 200_000)

    def test_corrupt_level_table_is_refused_before_datasketches_can_crash(self) -> None:
        """datasketches accepts some corrupt level offsets and then segfaults on the first query; our parser
        must refuse them. Run in a child process so a regression shows as a failure, not a dead test run."""
        code = textwrap.dedent(
            """
            import base64, sys
            import numpy as np
            from fleet.errors import ProtocolError
            from fleet.wire.sketches import deserialize_sketch, sketch_from_values
            raw = bytearray(sketch_from_values(np.random.default_rng(1).random(100000)).serialize())
            refused = changed = 0
            for pos in range(20, 56):
                for value in (0, 127, 255):
                    bad = bytearray(raw)
                    bad[pos] = value
                    if bad == raw:
                        continue
                    changed += 1
                    try:
                        sk = deserialize_sketch(base64.b64encode(bytes(bad)).decode())
                    except ProtocolError:
                        refused += 1
                        continue
                    sk.get_quantile(0.5)
                    list(sk)
            print(refused, changed)
            """
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-500:]}"
        refused, changed = map(int, proc.stdout.split())
        assert refused == changed  # every change to the level table is caught

    def test_weights_that_do_not_add_up_are_refused(self) -> None:
        raw = bytearray(sketch_from_values(np.random.default_rng(5).random(5000)).serialize())
        struct.pack_into("<Q", raw, 8, 4999)  # n no longer matches the level weights
        with pytest.raises(ProtocolError, match="weights"):
            deserialize_sketch(base64.b64encode(bytes(raw)).decode())

    def test_nan_items_are_refused(self) -> None:
        raw = bytearray(sketch_from_values(np.arange(10.0)).serialize())
        struct.pack_into("<f", raw, len(raw) - 4, float("nan"))
        with pytest.raises(ProtocolError, match="NaN"):
            deserialize_sketch(base64.b64encode(bytes(raw)).decode())


class TestFeatureSketcher:
    def test_rows_and_columns_then_drain(self) -> None:
        fs = FeatureSketcher()
        fs.update({"a": 1.0, "b": float("nan")})
        fs.update_column("a", [2.0, 3.0])
        wire = fs.drain()
        assert set(wire) == {"a"}
        assert deserialize_sketch(wire["a"]).n == 3
        assert fs.to_wire() == {}

    def test_feature_count_is_bounded(self) -> None:
        fs = FeatureSketcher(max_features=2)
        fs.update({"a": 1.0, "b": 2.0})
        with pytest.raises(FleetConfigError):
            fs.update({"c": 3.0})
