"""Sketch merge benchmark: a drift report over 10,000 devices x 30 features, end to end from the database.

Each simulated device sends one telemetry window: a KLL sketch (k=200) of ``--values`` values for each of
``--features`` features, in one of four device classes (one class drifts on feature 1). Setup, not in the
timed figure: building the sketches, and storing every batch through `Registry.store_telemetry` (the
ingestion path: multi-row insert, sketches as bytes, merged into the per model version x target x window
aggregates); its rate is recorded as ``ingest``.

Timed (``end_to_end_s``, median of ``--repeats``): `hub.monitoring.queries.drift_report_for` on a
`RegistrySource`, the hub's drift query: reading the aggregate rows from the database, merging them into the
cohorts (all, and one per device class) and the drift tests against the reference profile (Benjamini-Hochberg
across cohorts x features). ``rows_read`` says how many aggregate rows that was, ``device_rows_read`` how
many per-device window rows gave the cohorts' distinct device counts.

Accuracy: the KS distance of feature 0 over all devices from the stored aggregates against scipy's
``ks_2samp`` on the raw values, which must lie within the sketches' rank-error bound.

Canary (``canary``): ``--canary-devices`` devices (1,000) in two cohorts, half on the candidate version (the
rollout's canary), half on the baseline, two device classes, each sending ``--canary-batches`` ten-minute
batches of ``--features`` sketched features (device rows merged as the hub's retention does). Timed (median
of ``--repeats``): `canary_report_for` on a `RegistrySource`, the hub's canary query (the window aggregates:
per-device window rows and the cohort sketches); the reference, in the same run, is the same report from
every raw batch (`read_telemetry`, `split_rollout_batches`, `canary_report`: what the hub did before), and
both verdicts must agree.
Writes bench/results/sketch_merge.json.

    .venv/bin/python bench/bench_sketch_merge.py [--devices 10000] [--features 30] [--values 300]
        [--canary-devices 1000] [--canary-batches 12] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import gc
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

from bench.registry_db import database  # noqa: E402
from fleet.drift import ks_sketches  # noqa: E402
from fleet.telemetry import ReferenceProfile, TelemetryAggregate  # noqa: E402
from fleet.wire.messages import TelemetryBatch  # noqa: E402
from fleet.wire.sketches import (  # noqa: E402
    CONFIDENCE_BUCKETS,
    DEFAULT_SKETCH_K,
    LATENCY_BUCKETS_MS,
    HistogramAccumulator,
    serialize_sketch,
    sketch_from_values,
)
from hub.monitoring.queries import (  # noqa: E402
    RolloutView,
    canary_report,
    canary_report_for,
    drift_report_for,
    split_rollout_batches,
)
from hub.monitoring.registry_source import RegistrySource  # noqa: E402
from hub.registry import Database, Registry  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "sketch_merge.json"
CLASSES = ("rpi4-arm64", "jetson-orin", "intel-openvino", "x86-onnx-cpu")


def ingest(registry: Registry, devices: int, features: int, values: int, seed: int, chunk: int) -> dict[str, Any]:
    """Store one batch per device, ``chunk`` per write; return the raw values of feature 0 and timings."""
    rng = np.random.default_rng(seed)
    lat = HistogramAccumulator(LATENCY_BUCKETS_MS)
    lat.observe_many(rng.lognormal(3, 0.4, values))
    conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    conf.observe_many(np.clip(rng.normal(0.85, 0.05, values), 0, 1))
    latency, confidence = lat.to_histogram(), conf.to_histogram()
    raw_feature0: list[np.ndarray] = []
    build_s = store_s = 0.0
    for first in range(0, devices, chunk):
        t0 = time.perf_counter()
        batches = []
        for d in range(first, min(first + chunk, devices)):
            cls_index = d % len(CLASSES)
            shift = np.zeros(features)
            if cls_index == 1 and features > 1:
                shift[1] = 0.5
            data = rng.normal(shift, 1.0, size=(values, features)).astype(np.float32)
            raw_feature0.append(data[:, 0])
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
                    feature_sketches={
                        f"f{j}": serialize_sketch(sketch_from_values(data[:, j])) for j in range(features)
                    },
                )
            )
        t1 = time.perf_counter()
        registry.store_telemetry(batches)
        build_s, store_s = build_s + t1 - t0, store_s + time.perf_counter() - t1
    return {
        "raw_feature0": np.concatenate(raw_feature0),
        "latency": latency,
        "confidence": confidence,
        "build_s": build_s,
        "store_s": store_s,
    }


def canary_batches(devices: int, batches: int, features: int, seed: int) -> list[TelemetryBatch]:
    """Ten-minute batches of ``devices`` devices, half on the candidate version ``1.1`` (ids ``c-*``)."""
    rng = np.random.default_rng(seed)
    out = []
    for d in range(devices):
        canary = d % 2 == 0
        device_id, target = f"{'c' if canary else 'b'}-{d:05d}", CLASSES[(d // 2) % 2]
        speed = rng.lognormal(np.log(20.0 if target == CLASSES[0] else 5.0), 0.1)
        for w in range(batches):
            lat = HistogramAccumulator(LATENCY_BUCKETS_MS)
            lat.observe_many(rng.lognormal(np.log(speed), 0.3, 60))
            conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
            conf.observe_many(np.clip(rng.normal(0.85, 0.05, 60), 0, 1))
            data = rng.normal(0.0, 1.0, size=(60, features)).astype(np.float32)
            out.append(
                TelemetryBatch(
                    batch_id=f"canary-{d:05d}-{w:03d}",
                    device_id=device_id,
                    target=target,
                    model="canary",
                    version="1.1" if canary else "1.0",
                    window_start=600.0 * w,
                    window_end=600.0 * (w + 1),
                    requests=60,
                    errors=int(rng.binomial(60, 0.01)),
                    latency_ms=lat.to_histogram(),
                    confidence=conf.to_histogram(),
                    predictions={"a": 30, "b": 30},
                    feature_sketches={
                        f"f{j}": serialize_sketch(sketch_from_values(data[:, j])) for j in range(features)
                    },
                )
            )
    return out


def canary_bench(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The canary query from the window aggregates, and from every raw batch, on one stored fleet."""
    t0 = time.perf_counter()
    batches = canary_batches(args.canary_devices, args.canary_batches, args.features, args.seed + 2)
    build_s = time.perf_counter() - t0
    view = RolloutView(
        rollout_id="ro-bench",
        model="canary",
        candidate_version="1.1",
        baseline_version="1.0",
        canary_device_ids=sorted({b.device_id for b in batches if b.version == "1.1"}),
        window_start=0.0,
    )
    db = Database(url)
    registry = Registry(db)
    try:
        t0 = time.perf_counter()
        for first in range(0, len(batches), args.chunk):
            registry.store_telemetry(batches[first : first + args.chunk])
        store_s = time.perf_counter() - t0
        registry.prune_telemetry()  # merges the device rows of each write, as the hub's retention does
        source = RegistrySource(registry, rollout=lambda _r: view)
        times, raw_times = [], []
        for attempt in range(args.repeats):  # interleaved, so both see the same load
            gc.collect()  # the raw path's garbage is not the next query's cost
            t0 = time.perf_counter()
            report = canary_report_for(source, "ro-bench")
            times.append(time.perf_counter() - t0)
            if attempt < 2:
                gc.collect()
                t0 = time.perf_counter()
                stored, _ = registry.read_telemetry("canary")
                raw = canary_report(*split_rollout_batches(view, stored), candidate_version="1.1")
                raw_times.append(time.perf_counter() - t0)
                del stored
        windows = registry.windows.in_range("canary", since=0.0)
    finally:
        db.close()
    query_s, raw_s = statistics.median(times), statistics.median(raw_times)
    return {
        "devices": args.canary_devices,
        "cohorts": 2,
        "device_classes": 2,
        "features": args.features,
        "batches": len(batches),
        "query_s": query_s,
        "query_all_s": times,
        "raw_batches_s": raw_s,
        "raw_batches_all_s": raw_times,
        "raw_over_query": raw_s / query_s,
        "rows_read": {"aggregate_rows": len(windows.aggregates), "device_window_rows": len(windows.devices)},
        "raw_rows_read": len(batches),
        "verdict": report.verdict.value,
        "verdict_from_raw": raw.verdict.value,
        "verdicts_equal": report.verdict == raw.verdict,
        "setup": {"build_s": round(build_s, 2), "store_s": round(store_s, 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--values", type=int, default=300, help="values per feature per device")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--chunk", type=int, default=500, help="batches per ingestion write")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--canary-devices", type=int, default=1000)
    parser.add_argument("--canary-batches", type=int, default=12, help="ten-minute batches per canary device")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(args.seed + 1)
    raw_feature0_ref = rng.normal(0, 1, 200_000).astype(np.float32)
    with database(args.database) as url:
        db = Database(url)
        registry = Registry(db)
        try:
            data = ingest(registry, args.devices, args.features, args.values, args.seed, args.chunk)
            reference = ReferenceProfile(
                feature_sketches={
                    f"f{j}": serialize_sketch(
                        sketch_from_values(raw_feature0_ref if j == 0 else rng.normal(0, 1, 200_000))
                    )
                    for j in range(args.features)
                },
                predictions={"a": 100_000, "b": 100_000},
                confidence=data["confidence"],
            )
            source = RegistrySource(registry, reference=lambda _m, _v: reference)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                report = drift_report_for(source, "bench", "1.0")
                times.append(time.perf_counter() - start)
            rows_read = len(registry.windows.rows("bench", "1.0"))
            device_rows_read = sum(len(agg.devices) for _, agg in registry.windows.by_target("bench", "1.0"))
            pooled = TelemetryAggregate()  # cohort "all": every device class's rows merged
            for _, agg in source.target_aggregates("bench", "1.0"):
                pooled.merge(agg)
        finally:
            db.close()
    with database(args.database) as url:
        canary = canary_bench(url, args)
    ks = ks_sketches(reference.to_aggregate().sketches["f0"], pooled.sketches["f0"])
    raw_ks = float(stats.ks_2samp(raw_feature0_ref, data["raw_feature0"]).statistic)
    drifted = sorted(f"{c.cohort}/{f.feature}" for c in report.cohorts for f in c.features if f.drifted)
    result = {
        "benchmark": "sketch_merge",
        "params": {
            "values_per_feature_per_device": args.values,
            "kll_k": DEFAULT_SKETCH_K,
            "database": args.database,
            "repeats": args.repeats,
            "ingest_chunk": args.chunk,
        },
        "devices": args.devices,
        "features": args.features,
        "sketches": args.devices * args.features,
        "end_to_end_s": statistics.median(times),
        "end_to_end_all_s": times,
        "rows_read": rows_read,
        "device_rows_read": device_rows_read,
        "cohorts": len(report.cohorts),
        "ingest": {
            "build_s": round(data["build_s"], 2),
            "store_s": round(data["store_s"], 2),
            "batches_per_s": args.devices / data["store_s"],
            "note": "setup, not timed in end_to_end_s: multi-row insert and merge into the window aggregates",
        },
        "drifted": drifted,
        "canary": canary,
        "accuracy_feature0_all_devices": {
            "values": int(data["raw_feature0"].size),
            "ks_sketch": ks.statistic,
            "ks_scipy_raw": raw_ks,
            "ks_abs_error": abs(ks.statistic - raw_ks),
            "ks_error_bound": ks.error_bound,
            "within_bound": abs(ks.statistic - raw_ks) <= ks.error_bound,
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
    print(json.dumps({k: result[k] for k in ("devices", "features", "end_to_end_s", "rows_read", "ingest")}))
    print(json.dumps(result["accuracy_feature0_all_devices"]))
    print(json.dumps({k: canary[k] for k in ("devices", "query_s", "raw_batches_s", "raw_over_query", "rows_read")}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
