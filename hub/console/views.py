"""What the console's pages draw, shaped from registry rows and telemetry (pure; JSON-ready).

- `fleet_summary`: device counts by target, version, label and online state;
- `telemetry_series`: one point per telemetry window of a device (requests, errors, latency percentiles,
  mean confidence), for the device page's charts;
- `feature_distributions`: per feature, the reference and current distributions on common bins, for the
  drift page's overlaid charts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from datasketches import kll_floats_sketch

from fleet.drift.statistics import category_counts
from fleet.telemetry import ReferenceProfile, TelemetryAggregate
from fleet.wire.messages import TelemetryBatch
from fleet.wire.sketches import deserialize_sketch, histogram_count, histogram_mean, histogram_quantile
from hub.registry import Device

LATENCY_PERCENTILES = (0.5, 0.95, 0.99)
DISTRIBUTION_BINS = 20


def fleet_summary(devices: Iterable[Device]) -> dict[str, Any]:
    """Counts of devices overall, online, and by target, model version, update state and label."""
    rows = list(devices)
    by_label: Counter[str] = Counter(f"{k}={v}" for d in rows for k, v in d.labels.items())
    return {
        "total": len(rows),
        "online": sum(d.online for d in rows),
        "by_target": dict(sorted(Counter(d.target for d in rows).items())),
        "by_version": dict(sorted(Counter(_model_version(d) for d in rows).items())),
        "by_state": dict(sorted(Counter(d.update_state for d in rows).items())),
        "by_label": dict(sorted(by_label.items())),
    }


def _model_version(device: Device) -> str:
    return f"{device.active_model}:{device.active_version}" if device.active_model else "none"


def telemetry_series(batches: Sequence[TelemetryBatch]) -> dict[str, list[float | None]]:
    """Columns of one point per batch, by window end: ``t`` (epoch seconds), ``requests``, ``errors``,
    ``latency_p50``/``p95``/``p99`` (ms) and ``confidence`` (mean); None where a window had no sample."""
    ordered = sorted(batches, key=lambda b: b.window_end)
    columns: dict[str, list[float | None]] = {
        "t": [b.window_end for b in ordered],
        "requests": [float(b.requests) for b in ordered],
        "errors": [float(b.errors) for b in ordered],
    }
    for q in LATENCY_PERCENTILES:
        columns[f"latency_p{round(q * 100)}"] = [_finite(histogram_quantile(b.latency_ms, q)) for b in ordered]
    columns["confidence"] = [
        _finite(histogram_mean(b.confidence)) if histogram_count(b.confidence) else None for b in ordered
    ]
    return columns


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def feature_distributions(
    reference: ReferenceProfile, current: TelemetryAggregate, bins: int = DISTRIBUTION_BINS
) -> list[dict[str, Any]]:
    """Per feature of the reference: bin labels and the share of reference and current values in each bin
    (numerical: equal-width bins over both ranges; categorical: one bin per category)."""
    result = []
    for name, text in sorted(reference.feature_sketches.items()):
        ref = deserialize_sketch(text)
        cur = current.sketches.get(name)
        kind = reference.feature_kinds.get(name, "numerical")
        shape = _categorical(ref, cur) if kind == "categorical" else _numerical(ref, cur, bins)
        result.append({"feature": name, "kind": kind, "n_current": 0 if cur is None else cur.n, **shape})
    return result


def _categorical(ref: kll_floats_sketch, cur: kll_floats_sketch | None) -> dict[str, Any]:
    ref_counts = category_counts(ref)
    cur_counts = category_counts(cur) if cur is not None else {}
    labels = sorted(set(ref_counts) | set(cur_counts))
    return {
        "bins": labels,
        "reference": _shares([ref_counts.get(k, 0.0) for k in labels]),
        "current": _shares([cur_counts.get(k, 0.0) for k in labels]),
    }


def _numerical(ref: kll_floats_sketch, cur: kll_floats_sketch | None, bins: int) -> dict[str, Any]:
    sketches = [s for s in (ref, cur) if s is not None and not s.is_empty()]
    if not sketches:
        return {"bins": [], "reference": [], "current": []}
    low = min(s.get_min_value() for s in sketches)
    high = max(s.get_max_value() for s in sketches)
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    centers = ((edges[:-1] + edges[1:]) / 2).round(6).tolist()
    return {"bins": centers, "reference": _pmf(ref, edges), "current": _pmf(cur, edges) if cur else []}


def _pmf(sketch: kll_floats_sketch, edges: np.ndarray) -> list[float]:
    if sketch.is_empty():
        return []
    # get_pmf over the inner edges gives len(edges) - 1 buckets: (-inf, e1], ..., (e_{n-1}, +inf)
    return [round(float(p), 6) for p in np.clip(sketch.get_pmf(edges[1:-1].tolist(), True), 0, None)]


def _shares(counts: list[float]) -> list[float]:
    total = sum(counts)
    return [round(c / total, 6) if total else 0.0 for c in counts]
