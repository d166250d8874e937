"""The policy evaluator from the window aggregates, on SQLite and PostgreSQL: the same decisions and events as
from the raw batches of the same telemetry, with the raw batches pruned before every evaluation. The clock
moves with time-machine, a minute (one aggregate window) per step."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import time_machine
from prometheus_client import CollectorRegistry

from fleet.wire.messages import TelemetryBatch
from hub.monitoring.queries import FileSource, MonitoringSource
from hub.monitoring.registry_source import RegistrySource
from hub.policies.evaluator import PolicyEvaluator
from hub.registry import Database, Registry
from hub.registry.policies import PolicyStore
from hub.registry.rollouts import RolloutStore
from tests.hub.monitoring.telemetry_scenario import _batch
from tests.hub.policies.test_evaluator import _reference

WINDOW_S = 60.0
START = 1_900_000_020.0  # a window boundary
RPI = [f"rpi-{i}" for i in range(3)]
JET = [f"jet-{i}" for i in range(2)]
LABELS = {device: {"class": device.split("-")[0]} for device in RPI + JET}
POLICY = {
    "max_drift_share": 0.5,
    "max_violation_rate": 0.2,
    "window_s": 120,
    "lookback_s": 150,  # whole windows at every evaluation below: both readings take the same batches
    "by": ["target"],
    "rollback": True,
    "rollback_to": "1.0.0",
}


def _minute(rng: np.random.Generator, step: int) -> list[list[TelemetryBatch]]:
    """Two writes of half a minute each: rpi inputs drift at steps 2-4, jetson inputs break the contract
    (30 of 100 rows) at steps 4-6."""
    writes = []
    for half in range(2):
        start = START + WINDOW_S * step + 30 * half
        batches = []
        for device in RPI + JET:
            rpi = device in RPI
            batch = _batch(
                rng, device, "rpi4-arm64" if rpi else "jetson-orin", "2.0.0", step, latency_ms=10.0,
                x_shift=3.0 if rpi and 2 <= step <= 4 else 0.0, n=150,
            )  # fmt: skip
            broken = 0 if rpi or not 4 <= step <= 6 else 30
            update = {
                "batch_id": f"{device}-{step}-{half}",
                "window_start": start,
                "window_end": start + 30,
                "contract_rows": 100,
                "contract_violations": {"input.range": broken},
            }
            batches.append(batch.model_copy(update=update))
        writes.append(batches)
    return writes


class _Deployments:
    """Records rollback deployments as the hub's deploy would make them."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, list[str]]] = []

    def __call__(self, model: str, version: str, device_ids: list[str]) -> str:
        self.made.append((model, version, device_ids))
        return f"dep-{len(self.made)}"


def _evaluator(
    db: Database, source: Callable[[], MonitoringSource], deploy: _Deployments, by: list[str]
) -> PolicyEvaluator:
    registry = Registry(db)
    registry.add_version("digits", "2.0.0")
    store = PolicyStore(db)
    store.put("digits", "2.0.0", POLICY | {"by": by}, now=START)
    return PolicyEvaluator(store, registry, RolloutStore(db), source, deploy, CollectorRegistry())


def _events(evaluator: PolicyEvaluator) -> list[dict[str, Any]]:
    return [e.model_dump(exclude={"id"}) for e in reversed(evaluator.store.events("digits"))]


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    db = Database(database_url)
    registry = Registry(db)
    for device in RPI + JET:
        registry.provision_device(device, "rpi4-arm64" if device in RPI else "jetson-orin", LABELS[device])
    yield registry
    db.close()


@pytest.mark.parametrize(
    ("by", "rpi", "jet"),
    [(["target"], "target=rpi4-arm64", "target=jetson-orin"), (["label:class"], "label:class=rpi", "label:class=jet")],
)
def test_decisions_from_the_aggregates_equal_those_from_the_raw_batches(
    registry: Registry, tmp_path: Path, by: list[str], rpi: str, jet: str
) -> None:
    """Cohorts by target, or by device label (the label rows of the aggregates)."""
    reference = _reference()
    dump = tmp_path / "telemetry.json"
    batches: list[dict[str, Any]] = []
    raw_db = Database(f"sqlite:///{tmp_path / 'raw.db'}")
    from_raw = _evaluator(raw_db, lambda: FileSource(dump), raw_deployments := _Deployments(), by)
    from_windows = _evaluator(
        registry.db,
        lambda: RegistrySource(registry, reference=lambda _m, _v: reference),
        window_deployments := _Deployments(),
        by,
    )
    rng = np.random.default_rng(7)
    decisions: list[tuple[int, int]] = []
    try:
        with time_machine.travel(START, tick=False) as clock:
            for step in range(9):
                for write in _minute(rng, step):
                    registry.store_telemetry(write, aggregate_window_s=WINDOW_S)
                    batches += [b.model_dump(mode="json") for b in write]
                registry.prune_telemetry(max_rows=0)  # also merges each device's rows of a window into one
                assert registry.telemetry_count() == 0
                raw = {"batches": batches, "reference": reference.model_dump(mode="json"), "labels": LABELS}
                dump.write_text(json.dumps(raw))
                clock.move_to(START + WINDOW_S * (step + 1))
                decisions.append((from_raw.evaluate(), from_windows.evaluate()))
    finally:
        raw_db.close()

    assert [mine for _, mine in decisions] == [theirs for theirs, _ in decisions]
    # rpi inputs drift from step 2 and "all" with them: both act at 4, when the breach has lasted the window
    # (the pass rolls every device back once); jetson's rate, over the 3 windows in the lookback, reaches 0.2
    # at step 5 and acts at 7
    assert [acted for acted, _ in decisions] == [0, 0, 0, 0, 2, 0, 0, 1, 0]
    assert window_deployments.made == raw_deployments.made
    assert [devices for _, _, devices in window_deployments.made] == [sorted(JET + RPI), JET]
    events = _events(from_windows)
    assert events == _events(from_raw)
    assert [(e["action"], e["cohort"]) for e in events] == [
        ("alert", "all"),
        ("rollback", "all"),
        ("alert", rpi),
        ("alert", jet),
        ("rollback", jet),
    ]
    assert events[3]["evidence"]["breaches"][0]["rows"] == 1200  # 3 windows of 2 devices x 2 batches x 100
