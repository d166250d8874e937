"""`DeviceTraffic` subscriptions: plain by default, ``$share/GROUP/...`` for replicas, a chosen set of channels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.wire import topics
from fleet.wire.messages import DeviceState, encode
from fleet.wire.transport import Handler, InMemoryBroker, Message, Unsubscribe
from hub.devices.traffic import DeviceTraffic
from hub.registry import Database, Registry

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
