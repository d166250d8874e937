"""A subscription the broker refuses (NATS refuses QoS 1 subscriptions while JetStream recovers) is asked for
again with a growing delay until it is granted."""

from __future__ import annotations

import threading

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from fleet.wire.mqtt import BrokerAddress, PahoBroker
from fleet.wire.transport import Message

GRANTED = ReasonCode(PacketTypes.SUBACK, identifier=1)
REFUSED = ReasonCode(PacketTypes.SUBACK, identifier=0x80)


class Recorder:
    """Stands in for paho's ``subscribe``: records requests and hands out message ids."""

    def __init__(self) -> None:
        self.requests: list[list[tuple[str, int]]] = []
        self.changed = threading.Condition()

    def __call__(self, subscriptions: list[tuple[str, int]]) -> tuple[int, int]:
        with self.changed:
            self.requests.append(subscriptions)
            self.changed.notify_all()
            return 0, len(self.requests)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.requests) >= count, timeout_s)


def _broker(recorder: Recorder) -> PahoBroker:
    broker = PahoBroker(BrokerAddress("127.0.0.1", 9), wait_connected=False)  # nothing listens on port 9
    broker._client.subscribe = recorder  # type: ignore[method-assign]
    broker._connected.set()
    return broker


def _noop(_message: Message) -> None:
    return None


def test_a_refused_subscription_is_asked_for_again_until_granted() -> None:
    recorder = Recorder()
    broker = _broker(recorder)
    try:
        broker.subscribe("edgefleet/v1/bundles/#", _noop)
        assert recorder.requests == [[("edgefleet/v1/bundles/#", 1)]]
        broker._handle_subscribe(None, None, 1, [REFUSED], None)
        assert recorder.wait_for(2)  # asked again after the first delay
        broker._handle_subscribe(None, None, 2, [GRANTED], None)
        assert broker._subscribe_retries == {}
    finally:
        broker.close()


def test_a_suback_that_arrives_before_the_request_is_recorded_still_counts() -> None:
    recorder = Recorder()
    broker = _broker(recorder)
    try:
        broker._handle_subscribe(None, None, 1, [REFUSED], None)  # the network thread was faster
        broker.subscribe("edgefleet/v1/broadcast/#", _noop)
        assert recorder.wait_for(2)
    finally:
        broker.close()


def test_wait_subscribed_holds_until_every_subscription_is_granted() -> None:
    recorder = Recorder()
    broker = _broker(recorder)
    try:
        assert broker.wait_subscribed(0)  # connected, nothing asked
        broker.subscribe("edgefleet/v1/bundles/#", _noop)
        assert not broker.wait_subscribed(0.05)  # no SUBACK yet
        broker._handle_subscribe(None, None, 1, [REFUSED], None)
        assert not broker.wait_subscribed(0.05)  # refused: retried, still not in place
        assert recorder.wait_for(2)
        done = threading.Thread(target=broker._handle_subscribe, args=(None, None, 2, [GRANTED], None))
        done.start()
        assert broker.wait_subscribed(10)
        done.join()
    finally:
        broker.close()


class _PahoMessage:
    """What paho hands ``on_message``."""

    def __init__(self, topic: str) -> None:
        self.topic, self.payload, self.qos, self.retain = topic, b"x", 1, False


def test_a_raw_sink_runs_on_the_receiving_thread_and_other_handlers_on_the_dispatcher() -> None:
    broker = _broker(Recorder())
    seen: dict[str, list[str]] = {"raw": [], "handler": []}
    dispatched = threading.Event()

    def handler(message: Message) -> None:
        seen["handler"].append(f"{message.topic}@{threading.current_thread().name}")
        dispatched.set()

    try:
        broker.subscribe_raw(
            "a/+/telemetry", lambda m: seen["raw"].append(f"{m.topic}@{threading.current_thread().name}")
        )
        broker.subscribe("a/#", handler)

        def receive() -> None:
            for topic in ("a/1/telemetry", "a/1/state"):
                broker._handle_message(None, None, _PahoMessage(topic))

        receiving = threading.Thread(target=receive, name="receiving")
        receiving.start()
        receiving.join()
        assert seen["raw"] == ["a/1/telemetry@receiving"]  # already there when the receiving thread returns
        assert dispatched.wait(10)
        broker.close()  # the dispatcher finishes what it was given
        assert sorted(t.split("@")[0] for t in seen["handler"]) == ["a/1/state", "a/1/telemetry"]
        assert all(not t.endswith("@receiving") for t in seen["handler"])
    finally:
        broker.close()


def test_wait_subscribed_is_false_before_the_connection_is_ready() -> None:
    broker = PahoBroker(BrokerAddress("127.0.0.1", 9), wait_connected=False)
    try:
        assert not broker.wait_subscribed(0.05)
    finally:
        broker.close()


def test_a_topic_only_raw_sinks_want_is_not_queued_for_the_dispatcher() -> None:
    broker = _broker(Recorder())
    queued: list[str] = []
    put = broker._inbox.put
    broker._inbox.put = lambda item, *a, **k: queued.append(item.topic)  # type: ignore[method-assign]
    try:
        broker.subscribe_raw("a/+/telemetry", _noop)
        broker._handle_message(None, None, _PahoMessage("a/1/telemetry"))
        assert queued == []
        broker.subscribe("a/#", _noop)  # a new subscription: the remembered routes are recomputed
        broker._handle_message(None, None, _PahoMessage("a/1/telemetry"))
        assert queued == ["a/1/telemetry"]
    finally:
        broker._inbox.put = put  # type: ignore[method-assign]
        broker.close()
