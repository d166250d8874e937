"""RolloutManager against the registry and an in-memory broker: devices are simulated by their reports."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fleet.rollout import GateVerdict, RequestGate, RolloutSnapshot, RolloutState, Verdict
from fleet.rollout_plan import RolloutPlan, plan_from_cli
from fleet.wire import topics
from fleet.wire.messages import (
    ChunkFrame,
    DeploymentOrder,
    DeviceState,
    Histogram,
    InstalledModel,
    UpdateEvent,
    UpdateState,
    decode,
    decode_chunk,
)
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS
from fleet.wire.transport import InMemoryBroker, Message
from hub.app import Hub
from hub.bundles.transfer import BundleTransfer
from hub.config import HubSettings
from hub.devices.orders import DeploymentOrders
from hub.devices.traffic import DeviceTraffic
from hub.errors import ConflictError, HubError
from hub.registry.rollouts import RolloutStore
from hub.rollouts.manager import RolloutManager
from hub.rollouts.operations import create_rollout, request_command
from tests.hub.auth.clients import api_client
from tests.hub.registry.variants import add_stored_version

TARGET = "x86-onnx-cpu"


class Fleet:
    """A hub (not started) whose MQTT side runs on an in-memory broker, and simulated devices."""

    def __init__(self, root: Path) -> None:
        self.hub = Hub(HubSettings(data_dir=root, chunk_size=1024))
        self.broker = InMemoryBroker()
        self.orders_sink = DeploymentOrders(self.broker, self.hub.store, self.hub.registry, chunk_size=1024)
        self.orders: dict[str, DeploymentOrder | None] = {}
        self.broker.subscribe(topics.device_wildcard("deployment"), self._on_order)
        self.installed: dict[str, InstalledModel] = {}
        for version in ("1.0.0", "2.0.0"):
            self.add_version(version)
        self.verdict: GateVerdict | None = None
        self.gate_requests: list[RequestGate] = []

    def add_version(self, version: str) -> None:
        add_stored_version(self.hub, version, TARGET)

    def _on_order(self, message: Message) -> None:
        device_id, _ = topics.parse_device_topic(message.topic)
        self.orders[device_id] = decode(DeploymentOrder, message.payload) if message.payload else None

    def manager(self, retainer: BundleTransfer | None = None) -> RolloutManager:
        def analyse(request: RequestGate, snapshot: RolloutSnapshot) -> GateVerdict | None:
            self.gate_requests.append(request)
            return self.verdict

        manager = RolloutManager(self.hub.registry, self.orders_sink, analyse=analyse, retainer=retainer)
        traffic = DeviceTraffic(self.broker, self.hub.registry)  # as in a hub: wired, then subscribed
        traffic.on_event(manager.observe_event)
        traffic.on_state(manager.observe_state)
        traffic.start()  # the in-memory broker replays retained states here
        return manager

    def device(self, name: str, version: str = "1.0.0") -> str:
        self.hub.registry.provision_device(name, TARGET, {"site": "north" if len(self.installed) % 2 else "south"})
        self.installed[name] = self._installed(version)
        self.report(name, UpdateState.IDLE, deployment_id=None)
        return name

    def _installed(self, version: str) -> InstalledModel:
        variant = self.hub.registry.list_variants("digits", version)[0]
        return InstalledModel(model="digits", version=version, sha256=variant.bundle_sha256, target=TARGET)

    def report(
        self,
        device_id: str,
        update_state: UpdateState,
        deployment_id: str | None,
        previous: InstalledModel | None = None,
    ) -> None:
        state = DeviceState(
            device_id=device_id,
            online=True,
            target=TARGET,
            active=self.installed[device_id],
            last_known_good=previous,
            update_state=update_state,
            deployment_id=deployment_id,
        )
        self.broker.publish(topics.device_topic(device_id, "state"), state.model_dump_json().encode(), retain=True)

    def obey(self, manager: RolloutManager, *, fail: bool = False) -> int:
        """Every device with an order it has not carried out installs it (or fails); return how many."""
        acted = 0
        for device_id, order in self.orders.items():
            current = self.installed[device_id]
            if order is None or order.sha256 == current.sha256:
                continue
            acted += 1
            if fail and not order.allow_downgrade:
                manager.observe_event(
                    UpdateEvent(
                        device_id=device_id,
                        deployment_id=order.deployment_id,
                        state=UpdateState.FAILED,
                        ok=False,
                        detail="self-test failed",
                    )
                )
                self.report(device_id, UpdateState.FAILED, order.deployment_id, previous=current)
                self.installed[device_id] = current
                continue
            self.installed[device_id] = self._installed(order.version)
            self.report(device_id, UpdateState.DONE, order.deployment_id, previous=current)
        return acted


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path / "hub")
    yield f
    f.hub.db.close()


def _plan(**options: object) -> RolloutPlan:
    defaults: dict[str, object] = {"canary": "1", "waves": "50,100", "gate": False, "min_devices": 1}
    defaults.update(options)
    return plan_from_cli("digits:2.0.0", **defaults)  # type: ignore[arg-type]


def _drive(
    fleet: Fleet, manager: RolloutManager, rollout_id: str, *, fail: bool = False, rounds: int = 20
) -> RolloutSnapshot:
    for _ in range(rounds):
        manager.tick()
        snapshot = manager.store.load(rollout_id)
        if snapshot.final:
            return snapshot
        fleet.obey(manager, fail=fail)
    return manager.store.load(rollout_id)


def test_good_version_reaches_every_device_in_waves(fleet: Fleet) -> None:
    devices = [fleet.device(f"d{i}") for i in range(6)]
    manager = fleet.manager()
    snapshot = manager.start_rollout(_plan(), rollout_id="ro-good")
    sent = {d for d, o in fleet.orders.items() if o is not None}
    assert len(sent) == 1 and snapshot.state == RolloutState.WAVE_RUNNING  # the canary only
    snapshot = _drive(fleet, manager, "ro-good")
    assert snapshot.state == RolloutState.COMPLETED
    assert {fleet.installed[d].version for d in devices} == {"2.0.0"}
    assert {o.deployment_id for o in fleet.orders.values() if o} == {"ro-good"}
    waves = [a.wave for a in manager.store.history("ro-good") if a.kind == "deploy"]
    assert waves == sorted(waves) and len(set(waves)) == 3  # canary, 50%, 100%


def test_failing_version_aborts_and_rolls_back_to_last_known_good(fleet: Fleet) -> None:
    devices = [fleet.device(f"d{i}") for i in range(4)]
    manager = fleet.manager()
    manager.start_rollout(_plan(canary="2", max_failures=0), rollout_id="ro-bad")
    snapshot = _drive(fleet, manager, "ro-bad", fail=True)
    assert snapshot.state == RolloutState.ABORTED
    rollbacks = {d: o for d, o in fleet.orders.items() if o is not None and o.deployment_id == "ro-bad.rollback"}
    assert len(rollbacks) == 2 and all(o.allow_downgrade and o.version == "1.0.0" for o in rollbacks.values())
    assert {fleet.installed[d].version for d in devices} == {"1.0.0"}
    assert sum(1 for o in fleet.orders.values() if o is not None and o.deployment_id == "ro-bad") == 0


def test_abort_after_success_sends_devices_back_to_their_previous_model(fleet: Fleet) -> None:
    devices = [fleet.device(f"d{i}") for i in range(4)]
    manager = fleet.manager()
    manager.start_rollout(_plan(canary="2", waves="100"), rollout_id="ro-x")
    fleet.obey(manager)
    manager.tick()
    assert sum(fleet.installed[d].version == "2.0.0" for d in devices) == 2
    manager.command("ro-x", "abort")
    orders = [o for o in fleet.orders.values() if o is not None and o.deployment_id == "ro-x.rollback"]
    # the canary ran 2.0.0; the 100% wave was sent but not installed yet: all four go (or stay) on 1.0.0
    assert len(orders) == 4 and {o.version for o in orders} == {"1.0.0"} and all(o.allow_downgrade for o in orders)
    snapshot = _drive(fleet, manager, "ro-x")
    assert snapshot.state == RolloutState.ABORTED
    assert {fleet.installed[d].version for d in devices} == {"1.0.0"}


def test_gate_verdict_fail_aborts_and_pass_continues(fleet: Fleet) -> None:
    for i in range(4):
        fleet.device(f"d{i}")
    manager = fleet.manager()
    manager.start_rollout(_plan(canary="2", waves="100", gate=True), rollout_id="ro-gate")
    fleet.verdict = GateVerdict(verdict=Verdict.FAIL, reasons=("p95 latency 40% worse",))
    snapshot = _drive(fleet, manager, "ro-gate")
    assert fleet.gate_requests and set(fleet.gate_requests[0].candidates) <= set(snapshot.devices)
    assert snapshot.state == RolloutState.ABORTED
    assert "p95 latency" in json.dumps([a.model_dump() for a in manager.store.history("ro-gate")])


def test_status_keeps_the_gates_cause_and_events_give_the_timeline(fleet: Fleet) -> None:
    for i in range(4):
        fleet.device(f"d{i}")
    manager = fleet.manager()
    manager.start_rollout(_plan(canary="2", waves="100", gate=True), rollout_id="ro-why")
    fleet.verdict = GateVerdict(verdict=Verdict.FAIL, reasons=("p95 latency 40% worse",))
    assert _drive(fleet, manager, "ro-why").state == RolloutState.ABORTED
    client = api_client(fleet.hub, raise_server_exceptions=False)
    status = client.get("/rollouts/ro-why").json()
    assert "back on their last known good model" in status["reason"]
    assert status["cause"] == "gate failed after canary: p95 latency 40% worse"
    assert [(v["verdict"], v["reasons"]) for v in status["gate_verdicts"]] == [("fail", ["p95 latency 40% worse"])]
    events = client.get("/rollouts/ro-why/events").json()
    kinds = [e["kind"] for e in events]
    assert kinds.index("deploy") < kinds.index("request_gate") < kinds.index("rollback")
    assert all(isinstance(e["at"], float) for e in events)
    assert [e["target"] for e in events if e["kind"] == "state_changed"][-1] == "aborted"
    assert client.get("/rollouts/nope/events").status_code == 404
    canary = client.get("/rollouts/ro-why/canary").json()
    assert [v["verdict"] for v in canary["gate_verdicts"]] == ["fail"]


def test_a_new_manager_continues_from_the_database_and_drains_the_outbox(fleet: Fleet) -> None:
    for i in range(4):
        fleet.device(f"d{i}")
    first = fleet.manager()
    first.start_rollout(_plan(canary="1", waves="100"), rollout_id="ro-r")
    # a crash after persisting a step but before acting on it: the outbox row stays undone
    snapshot = first.store.load("ro-r")
    deploy = next(a for a in first.store.history("ro-r") if a.kind == "deploy")
    device_id = deploy.device_ids[0]
    fleet.orders.clear()
    first.store.save(snapshot, [deploy])
    second = fleet.manager()
    second.drain_outbox()
    assert fleet.orders[device_id] is not None and fleet.orders[device_id].deployment_id == "ro-r"  # type: ignore[union-attr]
    assert _drive(fleet, second, "ro-r").state == RolloutState.COMPLETED


def test_commands_are_checked_then_queued_for_the_hub(fleet: Fleet) -> None:
    fleet.device("d0")
    store = RolloutStore(fleet.hub.db)
    snapshot = create_rollout(store, fleet.hub.registry, _plan(), rollout_id="ro-q")
    assert snapshot.state == RolloutState.PENDING
    with pytest.raises(ConflictError, match="not allowed"):
        request_command(store, "ro-q", "resume")
    with pytest.raises(HubError, match="unknown command"):
        request_command(store, "ro-q", "explode")
    manager = fleet.manager()
    manager.tick()
    request_command(store, "ro-q", "pause")
    manager.tick()
    assert store.load("ro-q").state == RolloutState.PAUSED
    assert not store.pending_commands()


def test_rest_routes(fleet: Fleet) -> None:
    for i in range(3):
        fleet.device(f"d{i}")
    manager = fleet.manager()
    fleet.hub.rollouts = manager
    client = api_client(fleet.hub, raise_server_exceptions=False)
    body = {"model_version": "digits:2.0.0", "canary": "1", "waves": "100", "gate": False, "rollout_id": "ro-api"}
    created = client.post("/rollouts", json=body)
    assert created.status_code == 201 and created.json()["state"] == "wave_running"
    assert created.json()["totals"]["dispatched"] == 1
    assert client.get("/rollouts").json()[0]["rollout_id"] == "ro-api"
    paused = client.post("/rollouts/ro-api/pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert client.post("/rollouts/ro-api/explode").status_code == 422
    unknown = {**body, "model_version": "digits:9.9.9", "rollout_id": None}
    assert client.post("/rollouts", json=unknown).status_code == 404


def test_cli_start_status_events_and_commands_over_rest(fleet: Fleet) -> None:
    from hub.cli import app
    from tests.hub.cli.live_hub import serving

    fleet.device("d0")
    runner = CliRunner()
    with serving(fleet.hub) as hub_args:

        def cli(*args: str) -> Result:
            return runner.invoke(app, [*hub_args, *args])

        options = ["--canary", "1", "--waves", "100", "--no-gate", "--id", "ro-cli"]
        started = cli("rollout", "start", "digits:2.0.0", *options)
        assert started.exit_code == 0, started.output
        assert started.stdout.strip() == "ro-cli"
        bad = cli("rollout", "resume", "ro-cli")
        assert bad.exit_code == 1 and bad.output.startswith("error: HTTP 409: ") and "not allowed" in bad.output
        assert json.loads(cli("rollout", "abort", "ro-cli", "--json").stdout)["rollout_id"] == "ro-cli"
        fleet.manager().tick()
        status = cli("rollout", "status", "ro-cli", "--json")
        assert json.loads(status.stdout)["state"] in ("aborting", "aborted")
        assert json.loads(status.stdout)["cause"] == "operator: abort"
        table = cli("rollout", "status", "ro-cli")
        assert table.exit_code == 0 and "per device class" in table.stdout
        assert "ro-cli" in cli("rollout", "list").stdout
        assert json.loads(cli("rollout", "list", "--json").stdout)[0]["rollout_id"] == "ro-cli"
        events = json.loads(cli("rollout", "events", "ro-cli", "--json").stdout)
        assert [(e["source"], e["target"]) for e in events if e["kind"] == "state_changed"] == [("pending", "aborted")]
        assert "pending -> aborted" in cli("rollout", "events", "ro-cli").stdout


def _standard(edges: tuple[float, ...], placed: dict[float, int], *, total: float) -> Histogram:
    """A histogram on the standard edges with ``placed`` counts in the buckets ending at those edges."""
    counts = [0] * (len(edges) + 1)
    for edge, count in placed.items():
        counts[edges.index(edge)] = count
    return Histogram(edges=list(edges), counts=counts, total=total)


def test_canary_gate_judges_stored_telemetry(fleet: Fleet) -> None:
    from fleet.canary import CanaryConfig
    from fleet.rollout import new_rollout
    from fleet.wire.messages import TelemetryBatch
    from hub.rollouts.gate import canary_gate

    def batch(device_id: str, version: str, errors: int) -> TelemetryBatch:
        latency = _standard(LATENCY_BUCKETS_MS, {5.0: 100, 10.0: 250, 20.0: 50}, total=3400.0)
        confidence = _standard(CONFIDENCE_BUCKETS, {0.9: 100, 1.0: 300}, total=370.0)
        return TelemetryBatch(
            batch_id=f"batch-{device_id}-{version[0]}",
            device_id=device_id,
            target=TARGET,
            model="digits",
            version=version,
            window_start=100.0,
            window_end=160.0,
            requests=400,
            errors=errors,
            latency_ms=latency,
            confidence=confidence,
            predictions={"1": 200, "7": 200},
        )

    canary, baseline = ["c0", "c1", "c2"], ["b0", "b1", "b2"]
    batches = [batch(d, "2.0.0", 80) for d in canary] + [batch(d, "1.0.0", 0) for d in baseline]
    fleet.hub.registry.record_telemetry(batches)
    analyse = canary_gate(fleet.hub.registry, CanaryConfig(min_devices=2))
    snapshot = new_rollout("ro-t", _plan(), [], now=0.0)

    def request(since: float) -> RequestGate:
        return RequestGate(
            request_id="g1",
            model="digits",
            version="2.0.0",
            wave=0,
            attempt=1,
            since=since,
            candidates=tuple(canary),
            baseline=tuple(baseline),
        )

    report = analyse(request(0.0), snapshot)
    assert report.verdict == "fail" and any("error" in r.lower() for r in report.reasons), report.reasons
    assert analyse(request(1000.0), snapshot).verdict == "inconclusive"  # nothing since then


def test_rollback_without_a_retained_state_uses_the_registry_copy(fleet: Fleet) -> None:
    from fleet.rollout import RollBack

    device_id = fleet.device("d0")
    v1 = fleet._installed("1.0.0")
    fleet.hub.registry.apply_device_state(DeviceState(device_id=device_id, online=True, target=TARGET, active=v1))
    manager = RolloutManager(fleet.hub.registry, fleet.orders_sink)  # wired to no traffic: no retained states
    snapshot = create_rollout(RolloutStore(fleet.hub.db), fleet.hub.registry, _plan(), rollout_id="ro-n")
    manager._act(snapshot, [RollBack(deployment_id="ro-n.rollback", device_ids=(device_id,), reason="t")], [])
    order = fleet.orders[device_id]
    assert order is not None and order.version == "1.0.0" and order.allow_downgrade


def _gate_batches(fleet: Fleet, slow: float) -> tuple[list[str], list[str]]:
    from fleet.wire.messages import TelemetryBatch

    def batch(device_id: str, version: str, factor: float) -> TelemetryBatch:
        latency = _standard(LATENCY_BUCKETS_MS, {5.0: 100, 10.0: 250, 20.0: 50}, total=3400.0 * factor)
        confidence = _standard(CONFIDENCE_BUCKETS, {0.9: 100, 1.0: 300}, total=370.0)
        return TelemetryBatch(
            batch_id=f"gate-batch-{device_id}",
            device_id=device_id,
            target=TARGET,
            model="digits",
            version=version,
            window_start=100.0,
            window_end=160.0,
            requests=400,
            errors=0,
            latency_ms=latency,
            confidence=confidence,
            predictions={"1": 200, "7": 200},
        )

    canary, baseline = [f"c{i}" for i in range(4)], [f"b{i}" for i in range(4)]
    fleet.hub.registry.record_telemetry(
        [batch(d, "2.0.0", slow) for d in canary] + [batch(d, "1.0.0", 1.0) for d in baseline]
    )
    return canary, baseline


def test_canary_gate_uses_the_plans_analysis_settings(fleet: Fleet) -> None:
    from fleet.rollout import new_rollout
    from fleet.rollout_plan import gate_from_cli
    from hub.rollouts.gate import canary_gate

    canary, baseline = _gate_batches(fleet, slow=2.0)
    request = RequestGate(
        request_id="g1",
        model="digits",
        version="2.0.0",
        wave=0,
        attempt=1,
        since=0.0,
        candidates=tuple(canary),
        baseline=tuple(baseline),
    )
    analyse = canary_gate(fleet.hub.registry)
    default = analyse(request, new_rollout("ro-d", _plan(gate=True), [], now=0.0))
    assert default.verdict == "inconclusive"  # CanaryConfig's defaults: 5 devices per group
    assert any("needs 5 devices" in r for r in default.reasons), default.reasons
    small = _plan(gate=True, gate_spec=gate_from_cli(min_devices=4, min_requests=100))
    report = analyse(request, new_rollout("ro-s", small, [], now=0.0))
    assert report.verdict == "fail" and any(r.startswith("latency (critical) fail") for r in report.reasons)
    # latency demoted: its failure only costs score (5 of 6 metrics judged, 1 failed -> marginal)
    lenient = _plan(gate=True, gate_spec=gate_from_cli(min_devices=4, min_requests=100, critical="error_rate"))
    assert analyse(request, new_rollout("ro-l", lenient, [], now=0.0)).verdict != "fail"


def test_gate_settings_are_validated_and_round_trip(fleet: Fleet) -> None:
    from fleet.canary import CanaryMetric
    from fleet.errors import FleetConfigError
    from fleet.rollout_plan import gate_from_cli

    gate = gate_from_cli(
        after="canary",
        soak_s=1.0,
        retry_interval_s=2.0,
        max_wait_s=30.0,
        min_devices=3,
        min_requests=50,
        min_requests_per_device=10,
        critical="confidence, predictions",
    )
    plan = _plan(gate=True, gate_spec=gate)
    assert RolloutPlan.model_validate_json(plan.model_dump_json()) == plan
    assert plan.gate is not None and plan.gate.canary.min_devices == 3 and plan.gate.canary.min_requests == 50
    critical = {m for m in CanaryMetric if plan.gate.canary.spec(m).critical}
    assert critical == {CanaryMetric.CONFIDENCE, CanaryMetric.PREDICTIONS}
    with pytest.raises(FleetConfigError, match="invalid metrics"):
        gate_from_cli(critical="latency,speed")
    with pytest.raises(FleetConfigError, match="min_devices"):
        gate_from_cli(min_devices=1)
    old = json.loads(plan.model_dump_json())
    del old["gate"]["canary"]  # plans stored before the setting existed get CanaryConfig's defaults
    assert RolloutPlan.model_validate(old).gate.canary.min_devices == 5  # type: ignore[union-attr]


def test_cli_takes_gate_settings(fleet: Fleet) -> None:
    from hub.cli import app
    from tests.hub.cli.live_hub import serving

    fleet.device("d0")
    runner = CliRunner()
    options = ["--canary", "1", "--id", "ro-gc", "--gate-min-devices", "3", "--gate-min-requests", "40"]
    options += ["--gate-critical", "latency,confidence", "--gate-retry", "5"]
    with serving(fleet.hub) as hub_args:
        started = runner.invoke(app, [*hub_args, "rollout", "start", "digits:2.0.0", *options])
        bad = runner.invoke(app, [*hub_args, "rollout", "start", "digits:2.0.0", "--gate-critical", "speed"])
    assert started.exit_code == 0, started.output
    gate = RolloutStore(fleet.hub.db).load("ro-gc").plan.gate
    assert gate is not None and gate.retry_interval_s == 5 and gate.canary.min_devices == 3
    assert gate.canary.min_requests == 40 and gate.canary.metrics["confidence"].critical  # type: ignore[index]
    assert bad.exit_code == 1 and "HTTP 422" in bad.output and "invalid metrics" in bad.output


def test_rest_takes_gate_settings(fleet: Fleet) -> None:
    fleet.device("d0")
    client = api_client(fleet.hub, raise_server_exceptions=False)
    body = {
        "model_version": "digits:2.0.0",
        "canary": "1",
        "rollout_id": "ro-ga",
        "gate_min_devices": 2,
        "gate_critical": "error_rate",
    }
    assert client.post("/rollouts", json=body).status_code == 201
    gate = RolloutStore(fleet.hub.db).load("ro-ga").plan.gate
    assert gate is not None and gate.canary.min_devices == 2 and not gate.canary.metrics["latency"].critical  # type: ignore[index]
    assert client.post("/rollouts", json={**body, "rollout_id": "ro-gb", "gate_min_devices": 0}).status_code == 422


def test_rollouts_appear_as_deployments_with_per_device_rows(fleet: Fleet) -> None:
    devices = [fleet.device(f"d{i}") for i in range(4)]
    manager = fleet.manager()
    manager.start_rollout(_plan(canary="2", max_failures=0), rollout_id="ro-dep")
    snapshot = _drive(fleet, manager, "ro-dep", fail=True)
    assert snapshot.state == RolloutState.ABORTED
    canary = sorted(d for d, r in snapshot.devices.items() if r.canary)
    registry = fleet.hub.registry
    deployment = registry.get_deployment("ro-dep")
    assert (deployment.model, deployment.version, deployment.status) == ("digits", "2.0.0", "aborted")
    assert sorted(deployment.device_ids) == canary
    variant = registry.list_variants("digits", "2.0.0")[0].id
    rows = registry.deployment_devices("ro-dep")
    assert {(r.device_id, r.variant_id) for r in rows} == {(d, variant) for d in canary}
    rollback = registry.get_deployment("ro-dep.rollback")
    assert rollback.version == "1.0.0" and rollback.allow_downgrade and sorted(rollback.device_ids) == canary
    client = api_client(fleet.hub)
    listed = {d["id"] for d in client.get("/deployments").json()}
    assert {"ro-dep", "ro-dep.rollback"} <= listed
    assert len(client.get("/deployments/ro-dep").json()["devices"]) == 2
    assert set(devices) >= set(canary)


def test_failure_reasons_survive_a_new_manager(fleet: Fleet) -> None:
    for i in range(3):
        fleet.device(f"d{i}")
    first = fleet.manager()
    first.start_rollout(_plan(canary="1", waves="100", max_failures=0), rollout_id="ro-why")
    fleet.obey(first, fail=True)  # the failure event reaches this manager only; it never ticks again
    (device_id,) = [d for d, o in fleet.orders.items() if o is not None]
    second = fleet.manager()  # a restarted hub: no events in memory
    second.start()
    try:
        status = next(s for s in second.statuses() if s.device_id == device_id)
        assert status.error == "self-test failed"
        snapshot = second.wait("ro-why", lambda s: s.devices[device_id].phase == "failed", 10.0)
        assert snapshot.devices[device_id].detail == "self-test failed"
    finally:
        second.stop()
    assert RolloutStore(fleet.hub.db).errors() == {}  # the rollout is final: nothing left to remember


def test_each_wave_announces_its_devices_before_their_orders(fleet: Fleet) -> None:
    [fleet.device(f"d{i}") for i in range(6)]
    manager = fleet.manager()
    pushed: list[tuple[str, int, int]] = []

    def push(sha: str, devices: Collection[str]) -> None:
        pushed.append((sha, len(devices), sum(o is not None for o in fleet.orders.values())))

    manager.push = push
    manager.start_rollout(_plan(), rollout_id="ro-push")
    assert _drive(fleet, manager, "ro-push").state == RolloutState.COMPLETED
    bundle = fleet.hub.registry.list_variants("digits", "2.0.0")[0].bundle_sha256
    # canary (1 device), 50% (2 more), 100% (3 more): each announced before any of its orders was sent, so the
    # bundle's broadcast waits for the requests of exactly these devices
    assert pushed == [(bundle, 1, 0), (bundle, 2, 1), (bundle, 3, 3)]


def test_canary_report_of_a_rollout_uses_its_own_gate_settings(fleet: Fleet) -> None:
    from fleet.canary import CanaryConfig
    from fleet.rollout import DeviceRecord, Phase, new_rollout
    from fleet.rollout_plan import gate_from_cli
    from hub.monitoring.queries import canary_report_for
    from hub.monitoring.service import hub_source

    canary, _ = _gate_batches(fleet, slow=2.0)
    plan = _plan(gate=True, gate_spec=gate_from_cli(min_devices=2, min_requests=100))
    snapshot = new_rollout("ro-own", plan, [], now=0.0)
    snapshot.devices = {
        d: DeviceRecord(device_id=d, device_class=TARGET, target=TARGET, phase=Phase.SUCCEEDED, canary=True)
        for d in canary
    }
    RolloutStore(fleet.hub.db).create(snapshot)
    source = hub_source(fleet.hub.registry, fleet.hub.store)
    assert canary_report_for(source, "ro-own").verdict == "fail"  # 4 devices pass the plan's min_devices=2
    assert canary_report_for(source, "ro-own", config=CanaryConfig()).verdict == "inconclusive"  # defaults: 5


def test_reports_wake_the_engine_only_when_they_can_move_a_rollout(fleet: Fleet) -> None:
    [fleet.device(f"d{i}") for i in range(4)]
    manager = fleet.manager()
    manager.start_rollout(_plan(canary="2"), rollout_id="ro-wake")
    canary = sorted(d for d, order in fleet.orders.items() if order is not None)
    assert len(canary) == 2
    manager._wake.clear()  # (the worker's flag: set means a tick is due)
    fleet.report(canary[0], UpdateState.DOWNLOAD, "ro-wake")  # progress moves nothing
    assert not manager._wake.is_set()
    fleet.installed[canary[0]] = fleet._installed("2.0.0")
    fleet.report(canary[0], UpdateState.DONE, "ro-wake")  # one of two: the canary needs both
    assert not manager._wake.is_set()
    fleet.installed[canary[1]] = fleet._installed("2.0.0")
    fleet.report(canary[1], UpdateState.DONE, "ro-wake")  # now the canary can be complete
    assert manager._wake.is_set()
    manager.tick()
    assert sum(o is not None for o in fleet.orders.values()) == 4  # the next wave went out
    manager._wake.clear()
    late = sorted(set(fleet.orders) - set(canary))[0]
    fleet.report(late, UpdateState.FAILED, "ro-wake")  # a failure may trip the threshold: at once
    assert manager._wake.is_set()


def test_a_report_delivered_again_after_a_newer_one_does_not_move_the_device_back(fleet: Fleet) -> None:
    fleet.device("cam-1")
    manager = fleet.manager()

    def update_state() -> UpdateState | None:
        return next(s.update_state for s in manager.statuses() if s.device_id == "cam-1")

    done = DeviceState(device_id="cam-1", online=True, update_state=UpdateState.DONE, deployment_id="r1", ts=20.0)
    manager.observe_state(done)
    # a hub that fell behind gets an unacknowledged QoS 1 report again, after the newer one
    manager.observe_state(done.model_copy(update={"update_state": UpdateState.INSTALL, "ts": 10.0}))
    assert update_state() == UpdateState.DONE
    # the last will carries the connect time, and a new deployment may come from a clock that stepped back
    manager.observe_state(done.model_copy(update={"online": False, "update_state": UpdateState.IDLE, "ts": 1.0}))
    assert next(s.online for s in manager.statuses() if s.device_id == "cam-1") is False
    manager.observe_state(
        done.model_copy(update={"deployment_id": "r2", "update_state": UpdateState.DOWNLOAD, "ts": 2.0})
    )
    assert update_state() == UpdateState.DOWNLOAD


def _transfer(broker: InMemoryBroker, fleet: Fleet, *, max_chunks: int = 64) -> BundleTransfer:
    return BundleTransfer(broker, fleet.hub.store, fleet.hub.tuf, chunk_size=1024, retained_max_chunks=max_chunks)


def _retained_frames(broker: InMemoryBroker, sha256: str) -> list[ChunkFrame]:
    """What a device subscribing to the bundle's retained chunks is sent at once."""
    frames: list[ChunkFrame] = []
    broker.subscribe(topics.retained_chunks_filter(sha256), lambda m: frames.append(decode_chunk(m.payload)))()
    return sorted(frames, key=lambda f: f.index)


def test_a_rollout_keeps_its_bundle_retained_while_it_runs_and_clears_it_when_it_ends(fleet: Fleet) -> None:
    [fleet.device(f"d{i}") for i in range(4)]
    transfer = _transfer(fleet.broker, fleet)
    manager = fleet.manager(retainer=transfer)
    pushed: list[str] = []
    manager.push = lambda sha, _devices: pushed.append(sha)
    manager.start_rollout(_plan(canary="1", waves="100"), rollout_id="ro-keep")
    bundle = fleet.hub.registry.list_variants("digits", "2.0.0")[0].bundle_sha256
    assert [o.retained_chunks for o in fleet.orders.values() if o is not None] == [True]
    frames = _retained_frames(fleet.broker, bundle)
    assert b"".join(f.data for f in frames) == fleet.hub.store.read(bundle)  # the whole bundle, nobody asked
    assert [f.index for f in frames] == [0, 1] and not pushed  # no wave waits for requests
    assert manager.store.retained() == {"ro-keep": {bundle: 2}}
    assert _drive(fleet, manager, "ro-keep").state == RolloutState.COMPLETED
    assert all(o.retained_chunks for o in fleet.orders.values() if o is not None)
    assert _retained_frames(fleet.broker, bundle) == [] and manager.store.retained() == {}
    published = [m.topic for m in fleet.broker.published if "/retained/" in m.topic and m.payload]
    assert published == [topics.retained_chunk_topic(bundle, i) for i in (0, 1)]  # once for both waves


def test_a_bundle_with_more_chunks_than_the_limit_is_broadcast_to_each_wave_as_before(fleet: Fleet) -> None:
    [fleet.device(f"d{i}") for i in range(4)]
    manager = fleet.manager(retainer=_transfer(fleet.broker, fleet, max_chunks=1))  # the bundle has 2
    pushed: list[str] = []
    manager.push = lambda sha, _devices: pushed.append(sha)
    manager.start_rollout(_plan(canary="1", waves="100"), rollout_id="ro-big")
    assert _drive(fleet, manager, "ro-big").state == RolloutState.COMPLETED
    assert len(pushed) == 2 and not any(o.retained_chunks for o in fleet.orders.values() if o is not None)
    assert not any(m.retain for m in fleet.broker.published if "/bundles/" in m.topic)


def test_a_restarted_manager_clears_chunks_of_rollouts_that_ended_and_publishes_open_ones_again(
    fleet: Fleet,
) -> None:
    [fleet.device(f"d{i}") for i in range(4)]
    bundle = fleet.hub.registry.list_variants("digits", "2.0.0")[0].bundle_sha256
    fleet.manager(retainer=_transfer(fleet.broker, fleet)).start_rollout(_plan(), rollout_id="ro-open")
    assert len(_retained_frames(fleet.broker, bundle)) == 2
    # a broker restarted without persistence has lost them; a new leader publishes them again
    restarted = InMemoryBroker()
    manager = fleet.manager(retainer=_transfer(restarted, fleet))
    manager.start()
    manager.stop()
    assert len(_retained_frames(restarted, bundle)) == 2
    # the rollout ends on a hub that stops before clearing them (here: one with no broker to clear them on)
    assert _drive(fleet, fleet.manager(), "ro-open").state == RolloutState.COMPLETED
    assert manager.store.retained() == {"ro-open": {bundle: 2}}
    fleet.hub.store.path(bundle).unlink()  # what to clear is recorded: it needs no bundle
    again = fleet.manager(retainer=_transfer(restarted, fleet))
    again.start()
    again.stop()
    assert _retained_frames(restarted, bundle) == [] and again.store.retained() == {}


def test_chunks_a_broker_lost_are_published_again_when_the_hub_reconnects(fleet: Fleet) -> None:
    [fleet.device(f"d{i}") for i in range(4)]
    manager = fleet.manager(retainer=_transfer(fleet.broker, fleet))
    manager.start_rollout(_plan(), rollout_id="ro-lost")
    bundle = fleet.hub.registry.list_variants("digits", "2.0.0")[0].bundle_sha256
    for index in (0, 1):  # what a broker restarted without persistence keeps of them
        fleet.broker.publish(topics.retained_chunk_topic(bundle, index), b"", retain=True)
    manager.tick()
    assert _retained_frames(fleet.broker, bundle) == []  # nothing told the manager
    manager.broker_reconnected()
    manager.tick()
    assert len(_retained_frames(fleet.broker, bundle)) == 2
