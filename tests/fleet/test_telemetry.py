"""Telemetry aggregation, batch validation and reference profiles (fleet/telemetry.py)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from datasketches import kll_floats_sketch

from fleet.errors import ProtocolError
from fleet.telemetry import ReferenceProfile, TelemetryAggregate, validate_batch
from fleet.wire.messages import Histogram, ShadowStats, TelemetryBatch, decode, encode
from fleet.wire.sketches import (
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS_MS,
    FeatureSketcher,
    HistogramAccumulator,
    deserialize_sketch,
    serialize_sketch,
)


def _batch(device: str, values: np.ndarray, *, n: int = 100, errors: int = 1, shadow: bool = False) -> TelemetryBatch:
    lat = HistogramAccumulator(LATENCY_BUCKETS_MS)
    lat.observe_many(values)
    conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    conf.observe_many(np.full(n, 0.8))
    sketches = FeatureSketcher()
    sketches.update_column("x", values)
    return TelemetryBatch(
        batch_id=f"batch-{device}-{values.size}",
        device_id=device,
        target="rpi4-arm64",
        model="digits",
        version="1.0",
        window_start=100.0,
        window_end=160.0,
        requests=n,
        errors=errors,
        latency_ms=lat.to_histogram(),
        confidence=conf.to_histogram(),
        predictions={"cat": n - 10, "dog": 10},
        feature_sketches=sketches.to_wire(),
        shadow=ShadowStats(candidate_version="1.1", compared=10, agreed=9, latency_ms=lat.to_histogram())
        if shadow
        else None,
    )


class TestAggregate:
    def test_batches_add_up(self) -> None:
        rng = np.random.default_rng(6)
        batches = [_batch(f"dev-{i}", rng.lognormal(3, 0.5, 100), shadow=i == 0) for i in range(3)]
        agg = TelemetryAggregate.from_batches(batches)
        assert (agg.requests, agg.errors, agg.batches) == (300, 3, 3)
        assert agg.predictions == {"cat": 270, "dog": 30}
        assert agg.sketches["x"].n == 300
        assert (agg.shadow_compared, agg.shadow_agreed) == (10, 9)
        assert agg.devices == {"dev-0", "dev-1", "dev-2"}
        lat = agg.latency_histogram()
        assert lat is not None and sum(lat.counts) == 300
        other = TelemetryAggregate.from_batches(batches[:1])
        agg.merge(other)
        assert agg.requests == 400 and agg.sketches["x"].n == 400

    def test_validate_batch_names_the_bad_part(self) -> None:
        good = _batch("dev-1", np.ones(10))
        validate_batch(good)
        with pytest.raises(ProtocolError, match="feature 'x'"):
            validate_batch(good.model_copy(update={"feature_sketches": {"x": "AAAA"}}))
        with pytest.raises(ProtocolError, match="counts"):
            validate_batch(good.model_copy(update={"latency_ms": Histogram(edges=[1.0], counts=[1])}))
        with pytest.raises(ProtocolError, match="errors"):
            validate_batch(good.model_copy(update={"errors": 101}))

    def test_a_corrupt_sketch_leaves_the_aggregate_untouched(self) -> None:
        good = _batch("dev-1", np.ones(10))
        bad = good.model_copy(update={"feature_sketches": {"x": "AAAA"}})
        agg = TelemetryAggregate.from_batches([good])
        with pytest.raises(ProtocolError):
            agg.add(bad)
        assert agg.requests == 100 and agg.batches == 1


def test_reference_profile_round_trip() -> None:
    rng = np.random.default_rng(7)
    profile = ReferenceProfile.from_arrays(
        {"x": rng.normal(size=500), "colour": rng.integers(0, 3, 500)},
        predictions=["cat"] * 300 + ["dog"] * 200,
        confidences=rng.uniform(0.5, 1, 500),
        categorical=["colour"],
    )
    again = ReferenceProfile.model_validate_json(profile.model_dump_json())
    agg = again.to_aggregate()
    assert agg.sketches["x"].n == 500
    assert agg.predictions == {"cat": 300, "dog": 200}
    assert again.feature_kinds == {"colour": "categorical"}
    conf = agg.confidence_histogram()
    assert conf is not None and sum(conf.counts) == 500


def test_telemetry_stays_light_for_the_agent() -> None:
    code = "import sys, fleet.telemetry; print(sorted({'scipy', 'pandas', 'torch'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


class TestBatchValidation:
    """Everything storage and analysis rely on is checked before a batch is stored."""

    def test_non_finite_numbers_are_refused_at_decoding(self) -> None:
        good = _batch("d1", np.linspace(1, 50, 100))
        for field, value in (("window_end", "NaN"), ("window_start", "Infinity")):
            raw = encode(good).replace(f'"{field}":{getattr(good, field)}'.encode(), f'"{field}":{value}'.encode())
            with pytest.raises(ProtocolError, match=field):
                decode(TelemetryBatch, raw)
        with pytest.raises(ValueError, match="finite"):
            good.latency_ms.model_validate({**good.latency_ms.model_dump(), "total": math.inf})

    def test_sizes_that_do_not_fit_storage_are_refused(self) -> None:
        good = _batch("d1", np.linspace(1, 50, 100)).model_dump()
        for update in (
            {"version": "v" * 65},  # a 64-character column
            {"requests": 2**31},  # a 32-bit integer column
            {"predictions": {f"label-{i}": 1 for i in range(1001)}},
            {"feature_sketches": {f"f{i}": "" for i in range(257)}},
        ):
            with pytest.raises(ValueError):
                TelemetryBatch.model_validate({**good, **update})

    @pytest.mark.parametrize("which", ["latency_ms", "confidence", "shadow"])
    def test_only_the_standard_histogram_edges_are_accepted(self, which: str) -> None:
        good = _batch("d1", np.linspace(1, 50, 100), shadow=True)
        validate_batch(good)
        odd = Histogram(edges=[1.0, 2.0, 3.0], counts=[1, 2, 3, 4], total=5.0)
        if which == "shadow":
            assert good.shadow is not None
            bad = good.model_copy(update={"shadow": good.shadow.model_copy(update={"latency_ms": odd})})
        else:
            bad = good.model_copy(update={which: odd})
        with pytest.raises(ProtocolError, match="standard"):
            validate_batch(bad)

    def test_inconsistent_counts_and_windows_are_refused(self) -> None:
        good = _batch("d1", np.linspace(1, 50, 100), shadow=True)
        assert good.shadow is not None
        for update, message in (
            ({"offloaded": good.requests + 1}, "offloaded"),
            ({"window_end": good.window_start - 1}, "ends before it starts"),
            ({"shadow": good.shadow.model_copy(update={"agreed": 11})}, "shadow agreements"),
        ):
            with pytest.raises(ProtocolError, match=message):
                validate_batch(good.model_copy(update=update))

    def test_a_sketch_holding_infinity_is_refused_and_devices_never_make_one(self) -> None:
        sketch = kll_floats_sketch(200)
        sketch.update(np.array([1.0, np.inf], dtype=np.float32))
        with pytest.raises(ProtocolError, match="infinity"):
            deserialize_sketch(serialize_sketch(sketch))
        sketcher = FeatureSketcher()
        sketcher.update_column("x", np.array([1.0, np.inf, -np.inf, np.nan]))
        assert deserialize_sketch(sketcher.to_wire()["x"]).n == 1
        hist = HistogramAccumulator(LATENCY_BUCKETS_MS)
        hist.observe_many([2.0, np.inf])
        assert hist.count == 1 and math.isfinite(hist.total)
