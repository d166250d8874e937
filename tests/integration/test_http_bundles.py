"""Bundles over HTTP end to end: a hub whose orders say ``http`` and name a tampered mirror before a good one.
A rollout completes with every device refusing the tampered bytes (one line in its update history), installing
from the good mirror, and no bundle chunk crossing the broker. A next version then comes from behind the tampered
mirror out of the hub's own ``/bundles`` route, which the devices log in to with their broker credentials."""

from __future__ import annotations

from pathlib import Path

from fleet.rollout import RolloutState
from fleet.rollout_plan import plan_from_cli
from hub.api import create_app
from hub.app import Hub
from hub.config import HubSettings
from hub.demo.model import TrainedDigits
from hub.devices.orders import BundleSources
from tests.bundle_mirror import BundleMirror, store_files
from tests.http_server import free_port, running_server
from tests.integration.fleet_harness import Harness

DONE = (RolloutState.COMPLETED, RolloutState.ABORTED, RolloutState.PAUSED)


def test_a_rollout_installs_from_a_mirror_past_a_tampered_one(
    tmp_path: Path, broker_url: str | None, trained: TrainedDigits
) -> None:
    files = store_files(tmp_path / "hub" / "artifacts")
    tampered, good = BundleMirror(files, tamper=True), BundleMirror(files)
    api_port = free_port()
    with running_server(tampered) as bad, running_server(good) as mirror:
        mirrors = [f"http://{bad}/cdn", f"http://{mirror}/cdn"]
        settings = HubSettings(
            data_dir=tmp_path / "hub",
            broker_url=broker_url,  # the embedded broker and Mosquitto
            chunk_size=4096,
            bundle_transport="http",
            bundle_mirrors=mirrors,
            api_port=api_port,
        )
        hub = Hub(settings)
        hub.start()
        harness = Harness(hub, tmp_path, trained)
        try:
            with running_server(create_app(hub), port=api_port):
                published = harness.publish("1.0.0")
                agents = [harness.agent(f"h{i}", bundle_retry_initial_s=0.05, bundle_retry_max_s=0.2) for i in range(3)]
                assert hub.rollouts is not None
                plan = plan_from_cli("digits:1.0.0", canary="1", waves="100", gate=False, min_devices=1)
                hub.rollouts.start_rollout(plan, rollout_id="ro-http")
                snapshot = hub.rollouts.wait("ro-http", lambda s: s.state in DONE, 90)
                assert snapshot.state == RolloutState.COMPLETED, snapshot.reason
                assert hub.transfer is not None and hub.transfer.broadcasts == 0  # no chunk over the broker
                bundle = published.bundle_sha256
                assert [r.name for r in good.requests] == [bundle] * 3
                assert [(r.name, r.authorization) for r in tampered.requests] == [(bundle, None)] * 3
                hub.wait_deployment("ro-http", 30)
                refusal = f"refused mirror http://{bad}/cdn: it served bytes that fail verification"
                rows = hub.registry.deployment_devices("ro-http")
                assert len(rows) == 3 and all(r.state == "done" and refusal in r.detail for r in rows), rows

                # Only the hub behind the tampered mirror: its /bundles route serves, to the devices' logins.
                hub.orders.sources = BundleSources("http", (f"http://{bad}/cdn",), settings.device_bundle_url())
                harness.publish("1.1.0")
                deployment = hub.deploy("digits", "1.1.0", [a.config.device_id for a in agents])
                states = hub.wait_deployment(deployment.id, 60)
                assert set(states.values()) == {"done"} and hub.transfer.broadcasts == 0
                rows = hub.registry.deployment_devices(deployment.id)  # whole or as a delta: the mirror is refused
                assert all(f"refused mirror http://{bad}/cdn: it served" in r.detail for r in rows), rows
        finally:
            harness.close()
    for agent in agents:
        assert agent.service.predict([[0.0] * 64])["version"] == "1.1.0"
