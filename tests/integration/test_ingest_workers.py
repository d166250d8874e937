"""Two hub workers share telemetry through an MQTT shared subscription on Mosquitto: every batch is stored
exactly once, duplicates are dropped, and both workers take part."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.wire import topics
from fleet.wire.messages import TelemetryBatch, encode
from fleet.wire.mqtt import BrokerAddress, PahoBroker
from hub.app import Hub
from hub.config import HubSettings
from tests.hub.monitoring.telemetry_scenario import scenario
from tests.waiting import wait_until


@pytest.fixture
def workers(tmp_path: Path, broker_url: str | None) -> Iterator[list[Hub]]:
    if broker_url is None:
        pytest.skip("the embedded broker (amqtt) has no shared subscriptions")
    database_url = f"sqlite:///{tmp_path / 'registry.db'}"
    group = f"it-{uuid.uuid4().hex[:8]}"  # other tests on this broker must not join the group
    hubs: list[Hub] = []
    try:
        for name in ("a", "b"):
            hub = Hub(
                HubSettings(
                    data_dir=tmp_path / name,
                    database_url=database_url,
                    broker_url=broker_url,
                    hub_secret="worker-secret",
                    shared_telemetry=True,
                    share_group=group,
                    ingest_only=name == "b",
                )
            )
            hub.start()
            hubs.append(hub)
        yield hubs
    finally:
        for hub in hubs:
            hub.stop()


def test_shared_subscription_stores_each_batch_once_across_workers(workers: list[Hub], broker_url: str) -> None:
    prefix = uuid.uuid4().hex[:6]
    batches = [
        TelemetryBatch.model_validate(
            {**b, "device_id": f"{prefix}-{b['device_id']}", "batch_id": f"{prefix}-{b['batch_id']}"}
        )
        for b in scenario()["batches"]
    ]
    for device in sorted({(b.device_id, b.target) for b in batches}):
        workers[0].registry.provision_device(*device)
    resent = batches[::3]  # QoS 1 redelivery or a device re-sending: dropped by batch id
    publisher = PahoBroker(BrokerAddress.from_url(broker_url), client_id=f"it-pub-{prefix}")
    try:
        for batch in batches + resent:
            assert publisher.publish_and_wait(topics.device_topic(batch.device_id, "telemetry"), encode(batch))
    finally:
        publisher.close()
    ingestors = [hub.ingestor for hub in workers]
    assert all(ingestors)
    received = lambda: sum(i.received for i in ingestors if i)  # noqa: E731
    assert wait_until(lambda: received() == len(batches) + len(resent)), received()
    assert all(i is not None and i.wait_idle(30) for i in ingestors)
    stored = [i.stored for i in ingestors if i]
    assert sum(stored) == len(batches)
    assert sum(i.duplicates for i in ingestors if i) == len(resent)
    assert all(i.received > 0 for i in ingestors if i), [i.received for i in ingestors if i]
    assert workers[0].registry.telemetry_count() == len(batches)
    assert workers[0].rollouts is not None and workers[1].rollouts is None  # "b" is a telemetry-only worker
    assert sorted(b.batch_id for b in workers[1].registry.telemetry_batches()) == sorted(b.batch_id for b in batches)


def test_shared_telemetry_is_refused_with_the_embedded_broker(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="external broker"):
        HubSettings(data_dir=tmp_path, shared_telemetry=True)
    settings = HubSettings(
        data_dir=tmp_path, broker_url="mqtt://127.0.0.1:1883", shared_telemetry=True, share_group="g1"
    )
    assert settings.telemetry_filter() == "$share/g1/edgefleet/v1/devices/+/telemetry"
