"""Telemetry building blocks the agent needs to build batches (and the hub to read them).

Light on purpose: numpy and datasketches only, so a Raspberry Pi can import it.

- Fixed bucket edges (`LATENCY_BUCKETS_MS`, `CONFIDENCE_BUCKETS`) every agent uses, so histograms merge by
  adding counts.
- `HistogramAccumulator` observes values and produces / merges `fleet.wire.messages.Histogram`.
- KLL sketch helpers: build, serialise to base64 for ``TelemetryBatch.feature_sketches``, parse, merge.
- `FeatureSketcher` keeps one KLL sketch per feature on the device.

Malformed telemetry (bad edges, corrupt sketches) raises `fleet.errors.ProtocolError`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import numpy as np
from datasketches import kll_floats_sketch

from fleet.errors import FleetConfigError, ProtocolError
from fleet.wire.messages import Histogram

__all__ = [
    "CONFIDENCE_BUCKETS",
    "DEFAULT_SKETCH_K",
    "KLL_FAMILY",
    "KLL_FLAG_EMPTY",
    "KLL_FLAG_LEVEL_ZERO_SORTED",
    "KLL_FLAG_SINGLE_ITEM",
    "KLL_M",
    "LATENCY_BUCKETS_MS",
    "MAX_SKETCH_BYTES",
    "FeatureSketcher",
    "HistogramAccumulator",
    "check_histogram",
    "check_standard_edges",
    "deserialize_sketch",
    "histogram_count",
    "histogram_mean",
    "histogram_quantile",
    "kll_total_capacity",
    "merge_histograms",
    "merge_sketches",
    "new_sketch",
    "serialize_sketch",
    "sketch_from_values",
    "sketch_items",
]

#: Upper edges (inclusive) of the latency buckets, in milliseconds; one overflow bucket follows.
LATENCY_BUCKETS_MS: Final[tuple[float, ...]] = (
    0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0,
    150.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 2000.0, 5000.0, 10000.0,
)  # fmt: skip
#: Upper edges (inclusive) of the confidence buckets: 0.05 wide on [0, 1]; one overflow bucket follows.
CONFIDENCE_BUCKETS: Final[tuple[float, ...]] = tuple(round(0.05 * i, 2) for i in range(1, 21))
#: KLL accuracy parameter: k=200 gives about 1.33% normalised rank error (1.65% for PMF), 99% confidence.
DEFAULT_SKETCH_K: Final = 200
#: A serialised sketch larger than this is refused (k=200 sketches stay well under 8 KiB).
MAX_SKETCH_BYTES: Final = 64 * 1024


# --------------------------------------------------------------------------------------------- histograms


def check_histogram(hist: Histogram) -> None:
    if len(hist.counts) != len(hist.edges) + 1:
        raise ProtocolError(
            f"histogram has {len(hist.counts)} counts for {len(hist.edges)} edges; expected one more (overflow)"
        )
    if any(b <= a for a, b in zip(hist.edges, hist.edges[1:], strict=False)):
        raise ProtocolError("histogram edges are not strictly increasing")


def check_standard_edges(hist: Histogram, edges: Sequence[float], name: str) -> None:
    """Refuse a histogram whose edges are not exactly ``edges`` (`LATENCY_BUCKETS_MS` or `CONFIDENCE_BUCKETS`):
    histograms only merge with the same edges, so one stored with others would break every later report."""
    check_histogram(hist)
    if tuple(hist.edges) != tuple(edges):
        raise ProtocolError(f"{name} histogram does not use the standard {len(edges)} bucket edges")


class HistogramAccumulator:
    """Counts values into fixed buckets: ``counts[i]`` holds values ``<= edges[i]`` (and above the previous
    edge); the last count is the overflow. Adds `Histogram` messages with the same edges.

    With ``edges=None`` the accumulator adopts the edges of the first histogram it is given.
    """

    __slots__ = ("_counts", "_edges", "_edges_key", "_total")

    def __init__(self, edges: Sequence[float] | None = None) -> None:
        self._edges: np.ndarray | None = None
        self._edges_key: tuple[float, ...] = ()
        self._counts: np.ndarray | None = None
        self._total = 0.0
        if edges is not None:
            self._set_edges(edges)

    def _set_edges(self, edges: Sequence[float]) -> None:
        arr = np.asarray(edges, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0 or np.any(np.diff(arr) <= 0):
            raise FleetConfigError("histogram edges must be a non-empty, strictly increasing sequence")
        self._edges = arr
        self._edges_key = tuple(float(e) for e in arr)
        self._counts = np.zeros(arr.size + 1, dtype=np.int64)

    @property
    def edges(self) -> tuple[float, ...]:
        """The bucket upper edges (empty before the first histogram when created without edges)."""
        return self._edges_key

    @property
    def count(self) -> int:
        """Number of values seen."""
        return 0 if self._counts is None else int(self._counts.sum())

    @property
    def total(self) -> float:
        """Sum of the values seen."""
        return self._total

    def observe(self, value: float) -> None:
        """Count one value."""
        self.observe_many(np.asarray([value], dtype=np.float64))

    def observe_many(self, values: Iterable[float] | np.ndarray) -> None:
        """Count many values at once; NaN and infinite values are ignored."""
        if self._edges is None or self._counts is None:
            raise FleetConfigError("histogram accumulator has no edges yet")
        arr = np.asarray(values, dtype=np.float64).ravel()
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            return
        idx = np.searchsorted(self._edges, arr, side="left")
        self._counts += np.bincount(idx, minlength=self._counts.size)
        self._total += float(arr.sum())

    def add(self, hist: Histogram) -> None:
        """Merge a histogram message with the same edges; `ProtocolError` if they differ."""
        if tuple(hist.edges) != self._edges_key:  # the common case, same edges, skips the checks
            check_histogram(hist)
            if self._edges is None:
                self._set_edges(hist.edges)
            elif len(hist.edges) != self._edges.size or not np.allclose(hist.edges, self._edges, rtol=0, atol=1e-12):
                raise ProtocolError("histogram edges differ from this accumulator's; cannot merge")
        if self._counts is None or len(hist.counts) != self._counts.size:
            raise ProtocolError(f"histogram has {len(hist.counts)} counts for {len(hist.edges)} edges")
        self._counts += np.asarray(hist.counts, dtype=np.int64)
        self._total += hist.total

    def merge(self, other: HistogramAccumulator) -> None:
        """Merge another accumulator (no-op if it never got edges)."""
        if other._edges is None or other._counts is None:
            return
        if self._edges is None:
            self._set_edges(other._edges_key)
        if other._edges_key != self._edges_key or self._counts is None:
            raise ProtocolError("histogram edges differ from this accumulator's; cannot merge")
        self._counts += other._counts
        self._total += other._total

    def to_histogram(self) -> Histogram:
        """The wire message for the counts so far."""
        if self._edges is None or self._counts is None:
            raise FleetConfigError("histogram accumulator has no edges yet")
        return Histogram(edges=list(self.edges), counts=[int(c) for c in self._counts], total=self._total)


def merge_histograms(hists: Iterable[Histogram]) -> Histogram | None:
    """Sum histograms with identical edges; ``None`` for an empty input."""
    acc = HistogramAccumulator()
    seen = False
    for h in hists:
        acc.add(h)
        seen = True
    return acc.to_histogram() if seen else None


def histogram_count(hist: Histogram) -> int:
    """Number of values counted in ``hist``."""
    return int(sum(hist.counts))


def histogram_mean(hist: Histogram) -> float:
    """Mean of the counted values (``total / count``); NaN when empty."""
    n = histogram_count(hist)
    return hist.total / n if n else math.nan


def histogram_quantile(hist: Histogram, q: float) -> float:
    """Estimate the ``q`` quantile by linear interpolation inside the bucket, like Prometheus'
    ``histogram_quantile``: the first bucket starts at 0 and the overflow bucket answers its lower edge.
    NaN when empty."""
    if not 0.0 <= q <= 1.0:
        raise FleetConfigError(f"quantile {q} is outside [0, 1]")
    check_histogram(hist)
    counts = np.asarray(hist.counts, dtype=np.float64)
    n = counts.sum()
    if n == 0:
        return math.nan
    cum = np.cumsum(counts)
    rank = q * n
    i = int(np.searchsorted(cum, rank, side="left"))
    i = min(i, counts.size - 1)
    if i >= len(hist.edges):  # overflow bucket: no upper edge to interpolate to
        return float(hist.edges[-1])
    lower = 0.0 if i == 0 else float(hist.edges[i - 1])
    upper = float(hist.edges[i])
    below = 0.0 if i == 0 else float(cum[i - 1])
    inside = counts[i]
    if inside == 0:
        return upper
    return lower + (upper - lower) * (rank - below) / inside


# ------------------------------------------------------------------------------------------------ sketches


def new_sketch(k: int = DEFAULT_SKETCH_K) -> kll_floats_sketch:
    """An empty KLL float sketch."""
    if not 8 <= k <= 65535:
        raise FleetConfigError(f"KLL k must be in [8, 65535], got {k}")
    return kll_floats_sketch(k)


def sketch_from_values(values: Iterable[float] | np.ndarray, k: int = DEFAULT_SKETCH_K) -> kll_floats_sketch:
    """A KLL sketch of ``values`` (NaN and infinite values are skipped)."""
    sk = new_sketch(k)
    arr = np.asarray(values, dtype=np.float32).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size:
        sk.update(arr)
    return sk


def serialize_sketch(sketch: kll_floats_sketch) -> str:
    """Base64 of the sketch's compact serialisation, as carried in ``TelemetryBatch.feature_sketches``."""
    return base64.b64encode(sketch.serialize()).decode("ascii")


KLL_FAMILY: Final = 15
KLL_M: Final = 8
KLL_FLAG_EMPTY: Final = 1
KLL_FLAG_LEVEL_ZERO_SORTED: Final = 2
KLL_FLAG_SINGLE_ITEM: Final = 4


def _level_capacity_aux(k: int, depth: int) -> int:
    # KLL level capacity: round(k * (2/3)^depth), computed the way datasketches-cpp does (kll_helper).
    if depth > 30:
        half = depth // 2
        return _level_capacity_aux(_level_capacity_aux(k, half), depth - half)
    return (((2 * k) << depth) // (3**depth) + 1) >> 1


@functools.lru_cache(maxsize=1024)
def kll_total_capacity(k: int, m: int, num_levels: int) -> int:
    """Items a serialised KLL sketch of ``k`` (and ``m``) with ``num_levels`` levels has room for."""
    return sum(max(m, _level_capacity_aux(k, num_levels - h - 1)) for h in range(num_levels))


def _check_kll_bytes(raw: bytes) -> None:
    """Check a serialised KLL float sketch's structure before datasketches parses it.

    datasketches-cpp accepts some corrupt level tables at deserialisation and then reads out of bounds
    (a segfault) on the first query, so untrusted bytes from devices are checked here: layout, length,
    level offsets against the capacity implied by k, weights summing to n, no NaN, sorted levels.
    """
    if len(raw) < 8:
        raise ProtocolError("sketch is shorter than a KLL preamble")
    preamble_ints, _serial, family, flags = raw[0], raw[1], raw[2], raw[3]
    k = struct.unpack_from("<H", raw, 4)[0]
    m = raw[6]
    if family != KLL_FAMILY:
        raise ProtocolError(f"sketch family {family} is not KLL ({KLL_FAMILY})")
    if m != KLL_M or not m <= k:
        raise ProtocolError(f"KLL sketch has invalid k={k} / m={m}")
    if flags & KLL_FLAG_EMPTY:
        if preamble_ints != 2 or len(raw) != 8:
            raise ProtocolError("malformed empty KLL sketch")
        return
    if flags & KLL_FLAG_SINGLE_ITEM:
        if preamble_ints != 2 or len(raw) != 12 or not math.isfinite(struct.unpack_from("<f", raw, 8)[0]):
            raise ProtocolError("malformed single-item KLL sketch")
        return
    if preamble_ints != 5 or len(raw) < 20:
        raise ProtocolError("malformed KLL sketch preamble")
    n = struct.unpack_from("<Q", raw, 8)[0]
    num_levels = raw[18]
    if not 1 <= num_levels <= 61 or len(raw) < 28 + 4 * num_levels:
        raise ProtocolError(f"KLL sketch has an invalid level count {num_levels}")
    capacity = kll_total_capacity(k, m, num_levels)
    levels = [*struct.unpack_from(f"<{num_levels}I", raw, 20), capacity]
    items_at = 20 + 4 * num_levels + 8
    if any(b < a for a, b in itertools.pairwise(levels)) or len(raw) != items_at + 4 * (capacity - levels[0]):
        raise ProtocolError("KLL sketch level offsets do not match its length")
    if sum((levels[i + 1] - levels[i]) << i for i in range(num_levels)) != n or n == 0:
        raise ProtocolError("KLL sketch weights do not add up to its item count")
    values = np.frombuffer(raw, dtype="<f4", offset=items_at - 8)  # min, max, then the items
    if not np.isfinite(values).all() or values[0] > values[1]:
        raise ProtocolError("KLL sketch holds NaN, infinity or inconsistent min/max")
    items = values[2:]
    descending = items[1:] < items[:-1]  # allowed only across level boundaries and in an unsorted level 0
    descending[[e for e in (b - levels[0] - 1 for b in levels[1:num_levels]) if 0 <= e < descending.size]] = False
    if not flags & KLL_FLAG_LEVEL_ZERO_SORTED:
        descending[: max(0, levels[1] - levels[0] - 1)] = False
    if descending.any():
        raise ProtocolError("KLL sketch has an unsorted level")


def deserialize_sketch(text: str) -> kll_floats_sketch:
    """Parse a base64 KLL float sketch; `ProtocolError` if it is oversized, not base64 or not a sketch."""
    if len(text) > MAX_SKETCH_BYTES * 4 // 3 + 4:
        raise ProtocolError(f"sketch of {len(text)} base64 characters exceeds the {MAX_SKETCH_BYTES}-byte limit")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"sketch is not valid base64: {exc}") from exc
    _check_kll_bytes(raw)
    try:
        return kll_floats_sketch.deserialize(raw)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # what datasketches raises on bad bytes
        raise ProtocolError(f"corrupt KLL sketch: {exc}") from exc


def merge_sketches(sketches: Iterable[str | kll_floats_sketch], k: int = DEFAULT_SKETCH_K) -> kll_floats_sketch:
    """Merge sketches (objects or base64 text) into a new sketch; inputs are left untouched."""
    out = new_sketch(k)
    for sk in sketches:
        out.merge(deserialize_sketch(sk) if isinstance(sk, str) else sk)
    return out


def sketch_items(sketch: kll_floats_sketch) -> tuple[np.ndarray, np.ndarray]:
    """The sketch's retained items (sorted, float64) and their integer weights, which sum to ``n``; while
    the sketch is not in estimation mode the items are exactly the values it was fed.

    Read from the serialised form: the Python binding's iterator reports weight 1 for every item of some
    merged sketches (datasketches 5.x), which would silently distort every statistic built on it.
    """
    raw = sketch.serialize()
    flags = raw[3]
    if flags & KLL_FLAG_EMPTY:
        return np.empty(0, dtype=np.float64), np.empty(0, dtype=np.int64)
    if flags & KLL_FLAG_SINGLE_ITEM:
        return np.frombuffer(raw, dtype="<f4", count=1, offset=8).astype(np.float64), np.ones(1, dtype=np.int64)
    num_levels = raw[18]
    k, m = struct.unpack_from("<H", raw, 4)[0], raw[6]
    levels = np.array([*struct.unpack_from(f"<{num_levels}I", raw, 20), kll_total_capacity(k, m, num_levels)])
    items = np.frombuffer(raw, dtype="<f4", offset=20 + 4 * num_levels + 8).astype(np.float64)
    weights = np.repeat(np.left_shift(1, np.arange(num_levels, dtype=np.int64)), np.diff(levels))
    order = np.argsort(items, kind="stable")
    return items[order], weights[order]


class FeatureSketcher:
    """One KLL sketch per feature, filled on the device and drained into a `TelemetryBatch`."""

    __slots__ = ("_k", "_max_features", "_sketches")

    def __init__(self, k: int = DEFAULT_SKETCH_K, max_features: int = 256) -> None:
        new_sketch(k)  # validates k
        self._k = k
        self._max_features = max_features
        self._sketches: dict[str, kll_floats_sketch] = {}

    def _sketch(self, name: str) -> kll_floats_sketch:
        sk = self._sketches.get(name)
        if sk is None:
            if len(self._sketches) >= self._max_features:
                raise FleetConfigError(f"more than {self._max_features} sketched features")
            sk = self._sketches[name] = new_sketch(self._k)
        return sk

    def update(self, features: Mapping[str, float]) -> None:
        """Add one row of feature values (NaN and infinities skipped)."""
        for name, value in features.items():
            if math.isfinite(value):
                self._sketch(name).update(float(value))

    def update_column(self, name: str, values: Iterable[float] | np.ndarray) -> None:
        """Add many values of one feature (NaN and infinities skipped)."""
        arr = np.asarray(values, dtype=np.float32).ravel()
        arr = arr[np.isfinite(arr)]
        if arr.size:
            self._sketch(name).update(arr)

    def to_wire(self) -> dict[str, str]:
        """Serialised sketches for ``TelemetryBatch.feature_sketches`` (empty sketches left out)."""
        return {name: serialize_sketch(sk) for name, sk in self._sketches.items() if not sk.is_empty()}

    def drain(self) -> dict[str, str]:
        """`to_wire`, then start afresh for the next window."""
        wire = self.to_wire()
        self._sketches.clear()
        return wire
