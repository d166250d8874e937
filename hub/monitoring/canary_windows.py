"""Canary analysis from the window aggregates instead of every device's batch.

Each device's metrics (requests, errors, latency and confidence histograms, predictions, shadow counts) are
the sums of its `DeviceWindowRow` rows, exactly what `fleet.canary.device_metrics` makes of its
batches. Input drift pools each group's sketches from the `TelemetryWindowAggregate` rows (model version x
target x window) its devices contributed to: the same inputs as the batches when a group holds every device
of those rows; otherwise the other devices' inputs are pooled too, and the drift metric counts them.

A time range selects whole device windows: a device's window counts when one of its batches there ends in
the range (the batches themselves are not kept apart), so bounds that fall inside a window widen to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from datasketches import kll_floats_sketch

from fleet.canary import CanaryConfig, CanaryReport, DeviceMetrics, SketchPool, analyse_canary
from fleet.telemetry import TelemetryAggregate
from fleet.wire.sketches import new_sketch
from hub.registry.device_windows import DeviceWindowSums
from hub.registry.telemetry_tables import unpack_sketches
from hub.registry.telemetry_windows import DeviceWindowRow, WindowsRead

__all__ = ["GroupFilter", "canary_from_windows"]

GroupFilter = Callable[[str, str], bool]
"""Whether a device's telemetry of a version belongs to a group: ``(device_id, version) -> bool``."""
_CohortKey = tuple[str, str, float]  # version, target, window start (one model)


def canary_from_windows(
    windows: WindowsRead,
    *,
    in_canary: GroupFilter,
    in_baseline: GroupFilter,
    since: float | None = None,
    until: float | None = None,
    shadow_candidate: str | None = None,
    device_class: Callable[[str], str | None] | None = None,
    config: CanaryConfig = CanaryConfig(),
) -> CanaryReport:
    """`fleet.canary.analyse_canary` of the two groups' device windows in ``[since, until]``.

    Shadow statistics count only for ``shadow_candidate`` when given; ``device_class`` names a device's class
    (None: its targets, as from batches)."""
    used = [r for r in windows.devices if r.batches > 0 and _in_range(r, since, until)]
    canary_rows = [r for r in used if in_canary(r.device_id, r.version)]
    baseline_rows = [r for r in used if in_baseline(r.device_id, r.version)]
    pools = (_pool(windows, canary_rows), _pool(windows, baseline_rows))
    return analyse_canary(
        _device_metrics(canary_rows, shadow_candidate, device_class),
        _device_metrics(baseline_rows, shadow_candidate, device_class),
        config,
        sketch_pools=pools,
    )


def _in_range(row: DeviceWindowRow, since: float | None, until: float | None) -> bool:
    return (since is None or row.last_end >= since) and (until is None or row.first_end <= until)


def _device_metrics(
    rows: Iterable[DeviceWindowRow],
    shadow_candidate: str | None,
    device_class: Callable[[str], str | None] | None,
) -> list[DeviceMetrics]:
    """One `DeviceMetrics` per device (sorted by id), its rows summed."""
    sums: dict[str, DeviceWindowSums] = {}
    targets: dict[str, set[str]] = {}
    for row in rows:
        mine = sums.get(row.device_id)
        if mine is None:
            mine = sums[row.device_id] = DeviceWindowSums()
        mine.add_row(row)
        targets.setdefault(row.device_id, set()).add(row.target)
    out = []
    for device_id in sorted(sums):
        s = sums[device_id]
        shadows = [v for k, v in s.shadow.items() if shadow_candidate is None or k == shadow_candidate]
        named = device_class(device_id) if device_class is not None else None
        out.append(
            DeviceMetrics(
                device_id=device_id,
                device_class=named or ",".join(sorted(targets[device_id])) or "unknown",
                requests=s.requests,
                errors=s.errors,
                latency_ms=s.latency_ms.histogram(),
                confidence=s.confidence.histogram(),
                predictions=dict(s.predictions),
                shadow_compared=sum(compared for compared, _ in shadows),
                shadow_agreed=sum(agreed for _, agreed in shadows),
                window_start=s.first_start,
                window_end=s.last_end,
            )
        )
    return out


def _pool(windows: WindowsRead, group_rows: Sequence[DeviceWindowRow]) -> SketchPool:
    """The group's sketch pool: the aggregate rows its chosen devices' windows fall in, merged, with every
    device those rows hold."""
    keys_of: dict[str, set[_CohortKey]] = {}
    for row in group_rows:
        keys_of.setdefault(row.device_id, set()).add((row.version, row.target, row.window_start))

    def pool(devices: Sequence[DeviceMetrics]) -> TelemetryAggregate:
        keys = set().union(*(keys_of.get(d.device_id, set()) for d in devices))
        agg = TelemetryAggregate()
        for row in windows.aggregates:
            if (row.version, row.target, row.window_start) in keys:
                for name, raw in unpack_sketches(row.sketches).items():
                    mine = agg.sketches.get(name)
                    if mine is None:
                        mine = agg.sketches[name] = new_sketch(agg.k)
                    mine.merge(kll_floats_sketch.deserialize(raw))
        agg.devices = {d.device_id for d in devices} | {
            r.device_id for r in windows.devices if (r.version, r.target, r.window_start) in keys
        }
        return agg

    return pool
