"""Policies on a hub's registry with simulated telemetry: a drifted cohort, sustained for the policy's window,
pauses the model's rollout, raises an alert and rolls the cohort back. The clock moves with time-machine."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import time_machine
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from fleet.rollout import RolloutState
from fleet.telemetry import ReferenceProfile
from fleet.wire.messages import TelemetryBatch
from hub.api import create_app
from hub.app import Hub
from hub.auth import Role
from hub.cluster.leadership import AlwaysLeader
from hub.config import HubSettings
from hub.monitoring.registry_source import RegistrySource
from hub.policies.evaluator import PolicyEvaluator
from hub.registry.policies import PolicyStore
from hub.registry.rollouts import RolloutStore
from tests.hub.auth.clients import bearer_client, token_for
from tests.hub.monitoring.telemetry_scenario import _batch
from tests.hub.rollouts.test_manager import TARGET, Fleet, _drive, _plan

START = 1_900_000_000.0
WINDOW_S = 60.0  # aggregate windows finer than the policies' lookback, as a hub with short lookbacks sets them


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path / "hub")
    f.hub.orders = f.orders_sink  # Hub.deploy sends rollback orders through the in-memory broker
    yield f
    f.hub.db.close()


def _reference() -> ReferenceProfile:
    rng = np.random.default_rng(1)
    return ReferenceProfile.from_arrays(
        {"x": rng.normal(0, 1, 5000), "y": rng.uniform(0, 1, 5000)},
        predictions=["cat"] * 3500 + ["dog"] * 1500,
        confidences=np.clip(rng.normal(0.9, 0.04, 5000), 0, 1),
    )


def _telemetry(
    fleet: Fleet, devices: list[str], *, shift: float, seq: int, broken: dict[str, int] | None = None
) -> None:
    """One minute of telemetry of 2.0.0 from ``devices``, ending now; ``shift`` moves feature x; ``broken``
    gives each device's rows (of 100 checked) breaking the contract."""
    rng = np.random.default_rng(seq)
    now = time.time()
    batches: list[TelemetryBatch] = []
    for device in devices:
        batch = _batch(rng, device, TARGET, "2.0.0", seq, latency_ms=10.0, x_shift=shift, n=3000)
        update: dict[str, object] = {
            "batch_id": f"{device}-{seq:04d}-batch",
            "window_start": now - 60,
            "window_end": now,
        }
        if broken is not None:
            update |= {"contract_rows": 100, "contract_violations": {"input.range": broken.get(device, 0)}}
        batches.append(batch.model_copy(update=update))
    fleet.hub.registry.store_telemetry(batches, aggregate_window_s=WINDOW_S)


def _evaluator(fleet: Fleet, prometheus: CollectorRegistry) -> PolicyEvaluator:
    reference = _reference()
    return PolicyEvaluator(
        PolicyStore(fleet.hub.db),
        fleet.hub.registry,
        RolloutStore(fleet.hub.db),
        lambda: RegistrySource(fleet.hub.registry, reference=lambda m, v: reference),
        fleet.hub._deploy_rollback,
        prometheus,
    )


def _client(fleet: Fleet, role: Role = Role.OPERATOR, *, app: FastAPI | None = None) -> TestClient:
    # tokens without expiry: the tests move the clock years ahead
    return bearer_client(app or create_app(fleet.hub), token_for(fleet.hub, role, ttl_days=None))


def _policy(client: TestClient, **body: object) -> None:
    response = client.put("/models/digits/versions/2.0.0/policy", json=body)
    assert response.status_code == 200, response.text


def test_sustained_drift_pauses_the_rollout_alerts_and_rolls_the_cohort_back(fleet: Fleet) -> None:
    devices = [fleet.device(f"d{i}") for i in range(4)]
    manager = fleet.manager()
    manager.start_rollout(_plan(canary="2", waves="100", approval="after_canary"), rollout_id="ro-p")
    assert _drive(fleet, manager, "ro-p", rounds=3).state == RolloutState.AWAITING_APPROVAL
    canary = sorted(d for d in devices if fleet.installed[d].version == "2.0.0")
    assert len(canary) == 2
    prometheus = CollectorRegistry()
    evaluator = _evaluator(fleet, prometheus)
    client = _client(fleet)
    _policy(client, max_drift_share=0.5, window_s=600, lookback_s=120, by=[], rollback=True)

    with time_machine.travel(START, tick=False) as clock:
        _telemetry(fleet, canary, shift=3.0, seq=1)
        assert evaluator.evaluate() == 0  # breached, not yet for the window
        clock.shift(300)
        _telemetry(fleet, canary, shift=3.0, seq=2)
        assert evaluator.evaluate() == 0
        assert client.get("/policy-events").json() == []
        clock.shift(301)
        _telemetry(fleet, canary, shift=3.0, seq=3)
        assert evaluator.evaluate() == 1
        clock.shift(60)
        _telemetry(fleet, canary, shift=3.0, seq=4)
        assert evaluator.evaluate() == 0  # acted once per breach

    events = client.get("/policy-events", params={"model": "digits"}).json()
    assert [e["action"] for e in events] == ["rollback", "pause", "alert"]
    alert = events[-1]
    assert alert["cohort"] == "all" and alert["evidence"]["devices"] == canary
    assert alert["evidence"]["breaches"][0]["signal"] == "drift_share"
    assert alert["evidence"]["breached_since"] == START and alert["created_at"] == START + 601
    assert events[1]["evidence"]["rollouts"] == ["ro-p"]
    assert events[0]["evidence"]["to_version"] == "1.0.0"
    assert prometheus.get_sample_value("edgefleet_policy_actions_total", {"model": "digits", "action": "pause"}) == 1

    manager.tick()  # the queued pause is applied like an operator's
    assert manager.store.load("ro-p").state == RolloutState.PAUSED
    rollback = {
        d: o
        for d, o in fleet.orders.items()
        if o is not None and o.deployment_id == events[0]["evidence"]["deployment_id"]
    }
    assert sorted(rollback) == canary
    assert all(o.version == "1.0.0" and o.allow_downgrade for o in rollback.values())


def test_a_breach_that_does_not_last_the_window_does_nothing(fleet: Fleet) -> None:
    devices = [fleet.device(f"d{i}", version="2.0.0") for i in range(2)]
    evaluator = _evaluator(fleet, CollectorRegistry())
    client = _client(fleet)
    _policy(client, max_drift_share=0.5, window_s=600, lookback_s=120, by=["target"])
    with time_machine.travel(START, tick=False) as clock:
        _telemetry(fleet, devices, shift=3.0, seq=1)
        assert evaluator.evaluate() == 0
        clock.shift(300)
        _telemetry(fleet, devices, shift=0.0, seq=2)  # back to normal: the timer restarts
        assert evaluator.evaluate() == 0
        clock.shift(300)
        _telemetry(fleet, devices, shift=3.0, seq=3)
        assert evaluator.evaluate() == 0
        clock.shift(599)
        _telemetry(fleet, devices, shift=3.0, seq=4)
        assert evaluator.evaluate() == 0
        clock.shift(1)
        _telemetry(fleet, devices, shift=3.0, seq=5)
        assert evaluator.evaluate() == 2  # "all" and "target=...": alerted each, paused and rolled back nothing
    assert sorted(e["action"] for e in client.get("/policy-events").json()) == ["alert", "alert"]


def test_policy_rest_validates_reads_back_and_needs_an_operator_to_set(fleet: Fleet) -> None:
    app = create_app(fleet.hub)
    viewer = _client(fleet, Role.VIEWER, app=app)
    assert viewer.put("/models/digits/versions/2.0.0/policy", json={"max_drift_share": 0.3}).status_code == 403
    client = _client(fleet, app=app)
    assert client.put("/models/digits/versions/2.0.0/policy", json={"window_s": 5}).status_code == 422
    assert client.put("/models/digits/versions/9.9.9/policy", json={"max_drift_share": 0.3}).status_code == 404
    assert client.get("/models/digits/versions/2.0.0/policy").status_code == 404
    _policy(client, max_violation_rate=0.1, rollback=True, rollback_to="1.0.0")
    policy = client.get("/models/digits/versions/2.0.0/policy").json()["policy"]
    assert policy["max_violation_rate"] == 0.1 and policy["rollback_to"] == "1.0.0" and policy["window_s"] == 600


def test_contract_violations_by_label_are_read_from_the_aggregates_and_outlive_the_raw_batches(fleet: Fleet) -> None:
    devices = [fleet.device(f"d{i}", version="2.0.0") for i in range(4)]  # sites south, north, south, north
    client = _client(fleet, Role.VIEWER)
    url = "/models/digits/versions/2.0.0/contract-violations"
    query = {"by": "label:site", "cohort": "site=south", "last_hours": 1}
    with time_machine.travel(START, tick=False) as clock:
        # two writes in one aggregate window: each device's rows are summed when read, then merged by retention
        _telemetry(fleet, devices, shift=0.0, seq=1, broken={"d0": 10, "d2": 20})
        _telemetry(fleet, devices, shift=0.0, seq=2, broken={"d0": 30})
        from_rows = client.get(url, params=query).json()
        fleet.hub.registry.prune_telemetry(max_rows=0)
        assert fleet.hub.registry.telemetry_count() == 0
        assert client.get(url, params=query).json() == from_rows
        clock.shift(2 * 3600)
        assert client.get(url, params=query).json()["cohorts"] == []  # the window ended before the last hour
    cohorts = {c["cohort"]: c for c in from_rows["cohorts"]}
    assert sorted(cohorts) == ["all", "label:site=north", "label:site=south", "site=south"]
    south = cohorts["site=south"]
    assert south == cohorts["label:site=south"] | {"cohort": "site=south"}
    assert south["devices"] == ["d0", "d2"] and south["rows"] == 400 and south["violations"] == {"input.range": 60}
    assert south["rate"] == 0.15 and cohorts["label:site=north"]["rate"] == 0.0 and cohorts["all"]["rows"] == 800


class _OneElection(AlwaysLeader):
    """Leads when told to, as a replica that wins and later loses the lock."""

    def start(self, on_elected: Callable[[int], None], on_deposed: Callable[[], None]) -> None:
        self.elect, self.depose = on_elected, on_deposed


def test_only_the_leading_replica_evaluates_policies(tmp_path: Path) -> None:
    hub = Hub(HubSettings(data_dir=tmp_path / "hub", broker_port=0))
    election = hub.leadership = _OneElection()
    hub.start()
    try:
        assert not hub.policies.running  # a replica that has not won
        election.elect(1)
        assert hub.policies.running and hub.rollouts is not None
        election.depose()
        assert not hub.policies.running and hub.rollouts is None
    finally:
        hub.stop()
