"""Sketch merge benchmark: time to merge and test the feature sketches of 10,000 devices.

Each simulated device sends one telemetry window: a KLL sketch (k=200) of ``--values`` values for each of
``--features`` features, in one of four device classes. Building the device sketches is setup and is not
timed. Timed, in this process, single-threaded:

1. ``merge``: parse (base64, structure check, deserialise) and merge every device sketch into per-feature
   sketches for five cohorts (all, and one per device class);
2. ``test``: the drift tests of those cohorts against a reference profile (`fleet.drift.analyse_drift`,
   with Benjamini-Hochberg across cohorts x features);
3. ``end_to_end``: the same from `TelemetryBatch` messages (latency and confidence histograms, predictions
   and sketches) through `fleet.drift.group_cohorts` and `analyse_drift`.

Accuracy at that scale is recorded too: the KS distance and normed Wasserstein distance of feature 0 from
the merged sketches against scipy on the raw values. Writes bench/results/sketch_merge.json.

    .venv/bin/python bench/bench_sketch_merge.py [--devices 10000] [--features 8] [--values 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scipy import stats  # noqa: E402

from fleet.drift import analyse_drift, group_cohorts, ks_sketches, wasserstein_sketches  # noqa: E402
from fleet.telemetry import ReferenceProfile, TelemetryAggregate  # noqa: E402
from fleet.wire.messages import TelemetryBatch  # noqa: E402
from fleet.wire.sketches import (  # noqa: E402
    CONFIDENCE_BUCKETS,
    DEFAULT_SKETCH_K,
    LATENCY_BUCKETS_MS,
    HistogramAccumulator,
    deserialize_sketch,
    new_sketch,
    serialize_sketch,
    sketch_from_values,
)

RESULTS = ROOT / "bench" / "results" / "sketch_merge.json"
CLASSES = ("rpi4-arm64", "jetson-orin", "intel-openvino", "x86-onnx-cpu")


def _device_values(rng: np.random.Generator, cls_index: int, features: int, n: int) -> np.ndarray:
    # one class drifts on feature 1 so the tests have something to find
    shift = np.zeros(features)
    if cls_index == 1 and features > 1:
        shift[1] = 0.5
    return rng.normal(shift, 1.0, size=(n, features)).astype(np.float32)


def build(devices: int, features: int, values: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    lat = HistogramAccumulator(LATENCY_BUCKETS_MS)
    lat.observe_many(rng.lognormal(3, 0.4, values))
    conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    conf.observe_many(np.clip(rng.normal(0.85, 0.05, values), 0, 1))
    latency, confidence = lat.to_histogram(), conf.to_histogram()
    batches: list[TelemetryBatch] = []
    sketches: list[tuple[str, dict[str, str]]] = []
    raw_feature0: list[np.ndarray] = []
    raw_feature0_ref = rng.normal(0, 1, 200_000).astype(np.float32)
    for d in range(devices):
        cls_index = d % len(CLASSES)
        data = _device_values(rng, cls_index, features, values)
        raw_feature0.append(data[:, 0])
        wire = {f"f{j}": serialize_sketch(sketch_from_values(data[:, j])) for j in range(features)}
        sketches.append((CLASSES[cls_index], wire))
        batches.append(
            TelemetryBatch(
                batch_id=f"bench-{d:08d}",
                device_id=f"dev-{d:05d}",
                target=CLASSES[cls_index],
                model="bench",
                version="1.0",
                window_start=0.0,
                window_end=60.0,
                requests=values,
                errors=0,
                latency_ms=latency,
                confidence=confidence,
                predictions={"a": values // 2, "b": values - values // 2},
                feature_sketches=wire,
            )
        )
    reference = ReferenceProfile(
        feature_sketches={
            f"f{j}": serialize_sketch(sketch_from_values(raw_feature0_ref if j == 0 else rng.normal(0, 1, 200_000)))
            for j in range(features)
        },
        predictions={"a": 100_000, "b": 100_000},
        confidence=confidence,
    )
    return {
        "batches": batches,
        "sketches": sketches,
        "reference": reference,
        "raw_feature0": np.concatenate(raw_feature0),
        "raw_feature0_ref": raw_feature0_ref,
    }


def merge_cohorts(sketches: list[tuple[str, dict[str, str]]]) -> dict[str, TelemetryAggregate]:
    cohorts: dict[str, TelemetryAggregate] = {"all": TelemetryAggregate()}
    for cls in CLASSES:
        cohorts[f"target={cls}"] = TelemetryAggregate()
    for cls, wire in sketches:
        for name, text in wire.items():
            sk = deserialize_sketch(text)
            for key in ("all", f"target={cls}"):
                agg = cohorts[key]
                mine = agg.sketches.get(name)
                if mine is None:
                    mine = agg.sketches[name] = new_sketch(DEFAULT_SKETCH_K)
                mine.merge(sk)
    return cohorts


def timed(fn: Any, repeats: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--values", type=int, default=300, help="values per feature per device")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    data = build(args.devices, args.features, args.values, args.seed)
    setup_s = time.perf_counter() - t0
    n_sketches = args.devices * args.features
    sketch_bytes = [len(text) for _, wire in data["sketches"] for text in wire.values()]

    merge_times, cohorts = timed(lambda: merge_cohorts(data["sketches"]), args.repeats)
    reference = data["reference"].to_aggregate()
    test_times, report = timed(lambda: analyse_drift(reference, cohorts), args.repeats)
    e2e_times, e2e_report = timed(
        lambda: analyse_drift(data["reference"], group_cohorts(data["batches"], by=["target"])), 1
    )

    merged0, ref0 = cohorts["all"].sketches["f0"], reference.sketches["f0"]
    ks = ks_sketches(ref0, merged0)
    raw_ks = stats.ks_2samp(data["raw_feature0_ref"], data["raw_feature0"])
    w_sketch = wasserstein_sketches(ref0, merged0)
    w_raw = stats.wasserstein_distance(data["raw_feature0_ref"], data["raw_feature0"]) / float(
        np.std(data["raw_feature0_ref"].astype(np.float64))
    )
    drifted = sorted(f"{c.cohort}/{f.feature}" for c in report.cohorts for f in c.features if f.drifted)
    tests = sum(len(c.all_results()) for c in report.cohorts)
    result = {
        "benchmark": "sketch_merge",
        "params": {
            "devices": args.devices,
            "features": args.features,
            "values_per_feature_per_device": args.values,
            "kll_k": DEFAULT_SKETCH_K,
            "cohorts": len(cohorts),
            "repeats": args.repeats,
        },
        "sketches": n_sketches,
        "sketch_base64_bytes_mean": statistics.fmean(sketch_bytes),
        "setup_s": round(setup_s, 2),
        "merge_s": {"median": statistics.median(merge_times), "all": merge_times},
        "merge_us_per_device_sketch": statistics.median(merge_times) / n_sketches * 1e6,
        "test_s": {"median": statistics.median(test_times), "all": test_times, "tests": tests},
        "merge_and_test_s": statistics.median(merge_times) + statistics.median(test_times),
        "end_to_end_from_batches_s": e2e_times[0],
        "drifted": drifted,
        "end_to_end_drifted_cohorts": e2e_report.drifted_cohorts,
        "accuracy_feature0_all_devices": {
            "values": int(data["raw_feature0"].size),
            "ks_sketch": ks.statistic,
            "ks_scipy_raw": float(raw_ks.statistic),
            "ks_abs_error": abs(ks.statistic - float(raw_ks.statistic)),
            "ks_error_bound": ks.error_bound,
            "wasserstein_normed_sketch": w_sketch,
            "wasserstein_normed_scipy_raw": w_raw,
        },
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
            "note": "single-threaded; the CPUs were shared with other work (see load average): times vary",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("merge_s", "test_s", "merge_and_test_s", "end_to_end_from_batches_s")}))
    print(json.dumps(result["accuracy_feature0_all_devices"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
