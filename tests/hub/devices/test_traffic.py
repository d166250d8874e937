"""`DeviceTraffic` subscriptions: plain by default, ``$share/GROUP/...`` for replicas, a chosen set of channels."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from fleet.wire import topics
from fleet.wire.messages import DeviceState, UpdateEvent, UpdateState, encode
from fleet.wire.mqtt import BrokerAddress, PahoBroker
from fleet.wire.mqtt_bulk import BulkSubscriber
from fleet.wire.transport import Handler, InMemoryBroker, Message, Unsubscribe
from hub.devices.traffic import DeviceTraffic
from hub.registry import Database, Registry
from tests.waiting import wait_until

CHANNELS = ("state", "events", "fetch", "telemetry", "heartbeat", "capture", "certificate-request")


class RecordingBroker(InMemoryBroker):
    """The in-memory broker, remembering every filter subscribed."""

    def __init__(self) -> None:
        super().__init__()
        self.filters: list[str] = []
        self.levels: dict[str, int] = {}

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> Unsubscribe:
        self.filters.append(topic_filter)
        self.levels[topic_filter] = qos
        return super().subscribe(topic_filter, handler, qos=qos)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    registry = Registry(db)
    registry.provision_device("cam-1", "x86-onnx-cpu")
    yield registry
    db.close()


def test_plain_filters_by_default(registry: Registry) -> None:
    broker = RecordingBroker()
    DeviceTraffic(broker, registry).start()
    assert sorted(broker.filters) == sorted(topics.device_wildcard(c) for c in CHANNELS)


def test_a_replica_shares_every_channel_and_still_decodes(registry: Registry) -> None:
    broker = RecordingBroker()
    traffic = DeviceTraffic(broker, registry, shared_group="edgefleet-hub")
    states: list[DeviceState] = []
    traffic.on_state(states.append)
    traffic.start()
    assert sorted(broker.filters) == sorted(f"$share/edgefleet-hub/{topics.device_wildcard(c)}" for c in CHANNELS)
    broker.publish(topics.device_topic("cam-1", "state"), encode(DeviceState(device_id="cam-1", online=True)))
    assert [s.device_id for s in states] == ["cam-1"]


def test_a_chosen_set_of_channels(registry: Registry) -> None:
    broker = RecordingBroker()
    DeviceTraffic(broker, registry).start(channels=("state", "events"))
    assert broker.filters == [topics.device_wildcard("state"), topics.device_wildcard("events")]


def test_a_channel_can_be_read_at_qos_0(registry: Registry) -> None:
    broker = RecordingBroker()
    DeviceTraffic(broker, registry).start(channels=("state", "fetch"), qos={"fetch": 0})  # the leader's feed
    assert broker.levels == {topics.device_wildcard("state"): 1, topics.device_wildcard("fetch"): 0}


class RawBroker(RecordingBroker):
    """The recording broker, also offering raw sinks (as `PahoBroker` does)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw_filters: list[str] = []

    def subscribe_raw(self, topic_filter: str, sink: Handler, *, qos: int = 1) -> Unsubscribe:
        self.raw_filters.append(topic_filter)
        return super().subscribe(topic_filter, sink, qos=qos)


def test_raw_telemetry_goes_to_a_raw_sink_where_the_broker_has_one(registry: Registry) -> None:
    broker = RawBroker()
    traffic = DeviceTraffic(broker, registry)
    received: list[Message] = []
    traffic.on_telemetry_payload(received.append)
    traffic.start()
    assert broker.raw_filters == [topics.device_wildcard("telemetry")]
    broker.publish(topics.device_topic("cam-1", "telemetry"), b"{undecoded")
    assert [m.payload for m in received] == [b"{undecoded"]
    plain = RawBroker()
    DeviceTraffic(plain, registry).start()  # no raw listener: typed telemetry stays on the dispatcher
    assert plain.raw_filters == []


def test_a_bulk_device_source_keeps_the_order_across_channels(registry: Registry) -> None:
    """Every channel but telemetry on one bulk connection: a device's failed event is still handled before the
    state it sent next (the rollout engine relies on that order)."""
    device_id = f"cam-{uuid.uuid4().hex[:8]}"
    registry.provision_device(device_id, "x86-onnx-cpu")
    address = BrokerAddress("127.0.0.1", 1883)
    traffic = DeviceTraffic(InMemoryBroker(), registry, device_source=BulkSubscriber(address))
    seen: list[str] = []
    done = threading.Event()
    traffic.on_event(lambda event: seen.append(f"event {event.state}"))

    def state(s: DeviceState) -> None:
        seen.append(f"state {s.update_state}")
        if s.update_state == UpdateState.FAILED:
            done.set()

    traffic.on_state(state)
    traffic.start(channels=("state", "events"))
    device = PahoBroker(address)
    try:
        failed = UpdateEvent(device_id=device_id, deployment_id="r1", state=UpdateState.FAILED, ok=False)
        device.publish(topics.device_topic(device_id, "events"), encode(failed), qos=1)
        after = DeviceState(device_id=device_id, online=True, update_state=UpdateState.FAILED, deployment_id="r1")
        device.publish(topics.device_topic(device_id, "state"), encode(after), qos=1)
        assert done.wait(10)
        assert seen == ["event failed", "state failed"]
    finally:
        device.close()
        traffic.stop()


class CountingRegistry(Registry):
    """The real registry, counting the provisioning queries it answers."""

    queries = 0

    def existing_devices(self, device_ids: Iterable[str]) -> set[str]:
        self.queries += 1
        return super().existing_devices(device_ids)


def test_a_burst_of_new_devices_costs_one_provisioning_query_per_block(tmp_path: Path) -> None:
    """A fleet connecting at once: the dispatcher asks the registry about all the senders it has queued up in one
    query, not one per device."""
    db = Database(f"sqlite:///{tmp_path / 'burst.db'}")
    registry = CountingRegistry(db)
    run = uuid.uuid4().hex[:6]
    ids = [f"cam-{run}-{i:02d}" for i in range(50)]
    for device_id in ids:
        registry.provision_device(device_id, "x86-onnx-cpu")
    address = BrokerAddress("127.0.0.1", 1883)
    traffic = DeviceTraffic(InMemoryBroker(), registry, device_source=BulkSubscriber(address))
    holding, release, handled = threading.Event(), threading.Event(), []
    all_handled = threading.Event()

    def state(s: DeviceState) -> None:
        holding.set()
        release.wait(10)  # the first state holds the dispatcher while the others queue up
        handled.append(s.device_id)
        if len(handled) == len(ids):
            all_handled.set()

    traffic.on_state(state)
    traffic.start(channels=("state",))
    device = PahoBroker(address)
    try:
        for index, device_id in enumerate(ids):
            state_message = encode(DeviceState(device_id=device_id, online=True))
            device.publish(topics.device_topic(device_id, "state"), state_message, qos=1)
            if index == 0:
                assert holding.wait(10)
        assert wait_until(lambda: traffic._dispatcher is not None and traffic._dispatcher._inbox.qsize() == 49, 10)
        queries = registry.queries
        release.set()
        assert all_handled.wait(10)
        assert handled == ids  # in order
        assert registry.queries == queries + 1  # one query for the 49 queued, not 49
    finally:
        release.set()
        device.close()
        traffic.stop()
        db.close()
