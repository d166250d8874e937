"""Monitoring REST routes (hub/api_monitoring.py) on a started hub: /metrics, drift, canary, rollups."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet.canary import CanaryReport
from fleet.drift import DriftReport
from fleet.rollout_plan import plan_from_cli
from fleet.wire import topics
from fleet.wire.messages import DeviceState, encode
from fleet.wire.mqtt import PahoBroker
from hub.app import Hub
from hub.config import HubSettings
from hub.registry.rollouts import RolloutStore
from hub.rollouts.operations import create_rollout
from tests.hub.auth.clients import api_client
from tests.hub.monitoring.monitoring_fleet import CANARY, MODEL, VERSIONS, hub_scenario, install
from tests.waiting import wait_until


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def fleet(hub: Hub, tmp_path: Path) -> dict[str, Any]:
    data = hub_scenario(jetson_shift=1.0, slow_candidate=True)
    install(hub, data, tmp_path)
    assert hub.ingestor is not None
    for batch in data["batches"]:
        hub.ingestor.submit(batch)
    assert hub.ingestor.wait_stored(len(data["batches"]), timeout_s=30)
    return data


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_exposes_telemetry_devices_online_and_rollout_state(hub: Hub, fleet: dict[str, Any]) -> None:
    client = api_client(hub)
    _, secret = hub.registry.provision_device("cam-online", "rpi4-arm64")
    address = hub.broker_address.with_credentials("cam-online", secret)
    device = PahoBroker(address, client_id="cam-online")
    try:  # the device reports its state over MQTT: the gauge follows
        state = DeviceState(device_id="cam-online", online=True, target="rpi4-arm64", ts=time.time())
        device.publish_and_wait(topics.device_topic("cam-online", "state"), encode(state), retain=True)
        assert wait_until(lambda: hub.registry.get_device("cam-online").online)
    finally:
        device.close()
    plan = plan_from_cli(f"{MODEL}:{VERSIONS['1.1']}", canary="5%", waves="100")
    create_rollout(RolloutStore(hub.db), hub.registry, plan, rollout_id="ro-metrics")

    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    batches = fleet["batches"]
    assert samples[("edgefleet_telemetry_batches_total", (("result", "accepted"),))] == len(batches)
    rpi_new = (("model", MODEL), ("target", "rpi4-arm64"), ("version", VERSIONS["1.1"]))
    assert samples[("edgefleet_device_inference_requests_total", rpi_new)] == sum(
        b.requests for b in batches if b.target == "rpi4-arm64" and b.version == VERSIONS["1.1"]
    )
    assert samples[("edgefleet_device_inference_latency_seconds_count", rpi_new)] > 0
    assert samples[("edgefleet_devices_online", (("target", "rpi4-arm64"),))] == 1
    assert samples[("edgefleet_devices_registered", (("target", "rpi4-arm64"),))] == 21
    assert samples[("edgefleet_devices_online", (("target", "jetson-orin"),))] == 0
    states = {
        dict(labels)["state"]: v
        for (name, labels), v in samples.items()
        if name == "edgefleet_rollout_state" and dict(labels)["rollout"] == "ro-metrics"
    }
    assert list(states.values()).count(1.0) == 1  # the hub may already have started it: one current state
    assert all(
        dict(labels)["version"] == VERSIONS["1.1"] for (name, labels) in samples if name == "edgefleet_rollout_state"
    )
    assert not any("device_id" in dict(labels) or "device" in dict(labels) for _, labels in samples)


def test_duplicates_and_rejects_are_counted_on_metrics(hub: Hub, fleet: dict[str, Any]) -> None:
    assert hub.ingestor is not None
    for batch in fleet["batches"][:5]:
        hub.ingestor.submit(batch)
    assert hub.ingestor.wait_idle()
    assert hub.broker is not None
    hub.broker.publish(topics.device_topic("rpi-01", "telemetry"), b"{not json", qos=1)
    assert wait_until(lambda: hub.ingestor is not None and hub.ingestor.rejected == 1)
    samples = _samples(api_client(hub).get("/metrics").text)
    assert samples[("edgefleet_telemetry_batches_total", (("result", "duplicate"),))] == 5
    assert samples[("edgefleet_telemetry_batches_total", (("result", "rejected"),))] == 1
    assert hub.registry.telemetry_count() == len(fleet["batches"])


def test_drift_route_uses_the_bundle_reference_and_publishes_scores(hub: Hub, fleet: dict[str, Any]) -> None:
    client = api_client(hub)
    response = client.get(
        f"/models/{MODEL}/versions/{VERSIONS['1.0']}/drift", params={"cohort": "region=eu", "last_hours": 1}
    )
    assert response.status_code == 200, response.text
    report = DriftReport.model_validate(response.json())
    assert {c.cohort for c in report.cohorts} == {"all", "target=rpi4-arm64", "target=jetson-orin", "region=eu"}
    assert "target=jetson-orin" in report.drifted_cohorts and "target=rpi4-arm64" not in report.drifted_cohorts
    samples = _samples(client.get("/metrics").text)
    detected = {
        dict(labels)["cohort"]: v
        for (name, labels), v in samples.items()
        if name == "edgefleet_drift_detected" and dict(labels)["feature"] == "x"
    }
    assert detected["target=jetson-orin"] == 1 and detected["target=rpi4-arm64"] == 0
    assert client.get(f"/models/{MODEL}/versions/9.9.9/drift").status_code == 404
    assert client.get(f"/models/{MODEL}/versions/{VERSIONS['1.0']}/drift", params={"by": "colour"}).status_code == 422


def test_canary_routes_for_a_deployment_and_a_rollout(hub: Hub, fleet: dict[str, Any]) -> None:
    client = api_client(hub)
    deployment, _ = hub.registry.create_deployment(MODEL, VERSIONS["1.1"], CANARY)
    window_start = min(b.window_start for b in fleet["batches"])
    with hub.db.session() as session:  # the deployment began before the telemetry's windows
        row = session.get(type(deployment), deployment.id)
        assert row is not None
        row.created_at = window_start - 1
        session.add(row)
    response = client.get(f"/deployments/{deployment.id}/canary")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer.pop("gate_verdicts") == []  # a plain deployment has no gate
    report = CanaryReport.model_validate({k: v for k, v in answer.items() if k != "rollout_id"})
    assert report.verdict.value == "fail" and report.canary_devices == len(CANARY)
    assert any("latency" in reason for reason in report.reasons)
    samples = _samples(client.get("/metrics").text)
    assert samples[("edgefleet_canary_score", (("rollout", deployment.id),))] == report.score

    plan = plan_from_cli(f"{MODEL}:{VERSIONS['1.1']}", canary="5%", waves="100")
    create_rollout(RolloutStore(hub.db), hub.registry, plan, rollout_id="ro-canary")
    rollout = client.get("/rollouts/ro-canary/canary")
    assert rollout.status_code == 200 and rollout.json()["verdict"] in {"pass", "fail", "inconclusive"}
    assert client.get("/rollouts/nope/canary").status_code == 404


def test_rollups_route_lists_the_window_aggregates_pruned_batches_included(hub: Hub, fleet: dict[str, Any]) -> None:
    assert hub.registry.prune_telemetry(max_rows=30) == len(fleet["batches"]) - 30
    rows = api_client(hub).get(f"/models/{MODEL}/versions/{VERSIONS['1.0']}/telemetry/rollups").json()
    mine = [b for b in fleet["batches"] if b.version == VERSIONS["1.0"]]
    assert rows and all(r["version"] == VERSIONS["1.0"] and "sketches" not in r for r in rows)
    assert sum(r["batches"] for r in rows) == len(mine)
    assert sum(r["requests"] for r in rows) == sum(b.requests for b in mine)
    for row in rows:
        ends = row["window_start"] + row["window_s"]
        inside = {
            b.device_id for b in mine if b.target == row["target"] and row["window_start"] <= b.window_start < ends
        }
        assert row["devices"] == len(inside) > 0
