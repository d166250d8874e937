"""Policy evaluation benchmark: one pass of the hub's `PolicyEvaluator` over a fleet's last hour of telemetry.

``--devices`` devices (1,000) in two device classes run one model version; each sends ``--batches`` (12)
five-minute batches of ``--features`` (8) sketched features with data contract counts; one class drifts on
features 0 and 1 and breaks the contract. Setup, not timed: storing every batch through `Registry.store_telemetry`
(hourly window aggregates) and merging the device rows as the hub's retention does.

Timed (median of ``--repeats``): `PolicyEvaluator.evaluate` with one policy (drift share, violation rate, one
hour of lookback, cohorts by target) on a `RegistrySource`, the hub's source: the window aggregates (aggregate
rows for drift, device rows for requests and contract counts). The reference, in the same run and on the same
database, is the evaluation from every raw batch (the same source seen without its aggregates: what the hub did
before). Both must judge the same cohorts breaching and act on the same ones. Writes
bench/results/policy_eval.json.

    .venv/bin/python bench/bench_policy_eval.py [--devices 1000] [--batches 12] [--features 8]
        [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from bench.registry_db import database  # noqa: E402
from fleet.telemetry import ReferenceProfile  # noqa: E402
from fleet.wire.messages import TelemetryBatch  # noqa: E402
from fleet.wire.sketches import (  # noqa: E402
    CONFIDENCE_BUCKETS,
    LATENCY_BUCKETS_MS,
    HistogramAccumulator,
    serialize_sketch,
    sketch_from_values,
)
from hub.monitoring.queries import MonitoringSource, RolloutView, TelemetryRead  # noqa: E402
from hub.monitoring.registry_source import RegistrySource  # noqa: E402
from hub.policies.evaluator import PolicyEvaluator  # noqa: E402
from hub.registry import Database, Registry  # noqa: E402
from hub.registry.policies import PolicyStore  # noqa: E402
from hub.registry.rollouts import RolloutStore  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "policy_eval.json"
CLASSES = ("rpi4-arm64", "jetson-orin")
NOW = 1_900_000_800.0
POLICY = {"max_drift_share": 0.2, "max_violation_rate": 0.1, "window_s": 0, "lookback_s": 3600, "rollback": False}


class RawBatches:
    """A source seen without its window aggregates: reports and policies read every raw batch."""

    def __init__(self, source: RegistrySource) -> None:
        self._source = source

    def telemetry(
        self, model: str, version: str | None = None, *, since: float | None = None, until: float | None = None
    ) -> TelemetryRead:
        return self._source.telemetry(model, version, since=since, until=until)

    def reference(self, model: str, version: str) -> ReferenceProfile:
        return self._source.reference(model, version)

    def device_labels(self) -> dict[str, dict[str, str]]:
        return self._source.device_labels()

    def rollout(self, rollout_id: str) -> RolloutView:
        return self._source.rollout(rollout_id)


def ingest(registry: Registry, args: argparse.Namespace) -> float:
    """Store every device's batches of the last hour, a write per five minutes; return the seconds taken."""
    rng = np.random.default_rng(args.seed)
    lat = HistogramAccumulator(LATENCY_BUCKETS_MS)
    lat.observe_many(rng.lognormal(3, 0.4, args.values))
    conf = HistogramAccumulator(CONFIDENCE_BUCKETS)
    conf.observe_many(np.clip(rng.normal(0.85, 0.05, args.values), 0, 1))
    for d in range(args.devices):
        registry.provision_device(f"dev-{d:05d}", CLASSES[d % 2])
    store_s = 0.0
    for b in range(args.batches):
        end = NOW - 300 * (args.batches - 1 - b)
        batches = []
        for d in range(args.devices):
            drifting = d % 2 == 1
            shift = np.zeros(args.features)
            shift[:2] = 0.6 if drifting else 0.0
            data = rng.normal(shift, 1.0, size=(args.values, args.features)).astype(np.float32)
            batches.append(
                TelemetryBatch(
                    batch_id=f"b-{d:05d}-{b:03d}",
                    device_id=f"dev-{d:05d}",
                    target=CLASSES[d % 2],
                    model="bench",
                    version="1.0",
                    window_start=end - 300,
                    window_end=end,
                    requests=args.values,
                    errors=0,
                    latency_ms=lat.to_histogram(),
                    confidence=conf.to_histogram(),
                    predictions={"a": args.values // 2, "b": args.values - args.values // 2},
                    feature_sketches={
                        f"f{j}": serialize_sketch(sketch_from_values(data[:, j])) for j in range(args.features)
                    },
                    contract_rows=args.values,
                    contract_violations={"input.range": args.values // 5 if drifting else 0},
                )
            )
        start = time.perf_counter()
        registry.store_telemetry(batches)
        store_s += time.perf_counter() - start
    registry.prune_telemetry()  # merges each device's rows of a window, as the hub's retention does
    return store_s


def _constant(source: MonitoringSource) -> Callable[[], MonitoringSource]:
    return lambda: source


def timed(evaluator: PolicyEvaluator, repeats: int) -> tuple[int, list[float]]:
    """Acted cohorts of the first evaluation, and the seconds of each."""
    times, first = [], -1
    for _ in range(repeats):
        start = time.perf_counter()
        acted = evaluator.evaluate()
        times.append(time.perf_counter() - start)
        first = acted if first < 0 else first
    return first, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--values", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(args.seed + 1)
    reference = ReferenceProfile.from_arrays(
        {f"f{j}": rng.normal(0, 1, 5000) for j in range(args.features)},
        predictions=["a"] * 2500 + ["b"] * 2500,
        confidences=np.clip(rng.normal(0.85, 0.05, 5000), 0, 1),
    )
    runs: dict[str, dict[str, Any]] = {}
    with database(args.database) as url:
        db = Database(url)
        try:
            registry = Registry(db)
            store_s = ingest(registry, args)
            hub_source = RegistrySource(registry, reference=lambda _m, _v: reference)
            sources: dict[str, MonitoringSource] = {"aggregates": hub_source, "raw_batches": RawBatches(hub_source)}
            for name, source in sources.items():
                store = PolicyStore(db)
                store.put("bench", "1.0", POLICY, now=NOW)
                prometheus = CollectorRegistry()
                evaluator = PolicyEvaluator(
                    store,
                    registry,
                    RolloutStore(db),
                    _constant(source),
                    lambda _m, _v, _d: "none",
                    prometheus,
                    clock=lambda: NOW,
                )
                acted, times = timed(evaluator, args.repeats)
                alerts = store.events("bench")[:acted]  # this evaluator's: newest first, one alert per cohort
                cohorts = [(e.cohort, *(b["signal"] for b in e.evidence["breaches"])) for e in alerts]
                runs[name] = {"acted": acted, "acted_on": sorted(cohorts), "evaluate_s": statistics.median(times)}
                runs[name]["evaluate_all_s"] = times
            raw_rows = registry.telemetry_count("bench", "1.0")
            device_rows = len(registry.windows.device_rows("bench", "1.0", NOW - 3600, NOW))
        finally:
            db.close()
    same = runs["aggregates"]["acted_on"] == runs["raw_batches"]["acted_on"]
    result = {
        "benchmark": "policy_eval",
        "params": {k: getattr(args, k) for k in ("devices", "batches", "features", "values", "repeats", "database")},
        "policy": POLICY,
        "raw_batches_in_lookback": raw_rows,
        "device_rows_read": device_rows,
        "aggregates": runs["aggregates"],
        "raw_batches": runs["raw_batches"],
        "raw_over_aggregates": runs["raw_batches"]["evaluate_s"] / runs["aggregates"]["evaluate_s"],
        "same_decisions": same,
        "ingest": {"store_s": round(store_s, 2), "note": "setup, not timed"},
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
    print(json.dumps({k: result[k] for k in ("raw_over_aggregates", "same_decisions", "device_rows_read")}))
    print(json.dumps({k: runs[k]["evaluate_s"] for k in runs}))
    print(f"wrote {args.out}")
    if not same:
        raise SystemExit("the two evaluations acted on different cohorts")


if __name__ == "__main__":
    main()
