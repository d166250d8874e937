"""A rollout's bundle kept retained on the broker outlives a broker restarted without persistence: the hub
publishes its chunks again once its connection comes back, so devices still receive them without asking."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from fleet.rollout_plan import plan_from_cli
from fleet.wire import topics
from fleet.wire.messages import DeviceState, InstalledModel, encode
from hub.app import Hub
from hub.config import HubSettings
from tests.hub.registry.variants import add_stored_version
from tests.integration.private_mosquitto import PrivateMosquitto
from tests.waiting import wait_until

TARGET = "x86-onnx-cpu"
PING = "test/ping"
WAIT_S = 30.0


def _client(port: int) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _retained_chunks(port: int, sha256: str) -> int:
    """How many retained chunks of ``sha256`` the broker sends a new subscriber."""
    received: list[str] = []
    subscribed, pinged = threading.Event(), threading.Event()

    def on_message(_client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic == PING:
            pinged.set()
        elif message.payload:
            received.append(message.topic)

    reader = paho.Client(CallbackAPIVersion.VERSION2)
    reader.on_subscribe = lambda *_args: subscribed.set()
    reader.on_message = on_message
    try:
        reader.connect("127.0.0.1", port)
    except OSError:  # the broker is still coming back
        return 0
    reader.loop_start()
    try:
        reader.subscribe([(topics.retained_chunks_filter(sha256), 1), (PING, 1)])
        assert subscribed.wait(WAIT_S)
        # retained messages come right after the subscription, on the same connection: before the ping
        reader.publish(PING, b"", qos=1)
        assert pinged.wait(WAIT_S)
    finally:
        reader.disconnect()
        reader.loop_stop()
    return len(set(received))


def test_the_hub_publishes_a_rollouts_chunks_again_on_a_broker_restarted_without_them(tmp_path: Path) -> None:
    (tmp_path / "mosquitto").mkdir()
    broker = PrivateMosquitto(tmp_path / "mosquitto")  # no persistence: a restart loses every retained message
    broker.start()
    hub = Hub(HubSettings(data_dir=tmp_path / "hub", broker_url=broker.url, chunk_size=1024))
    hub.start()
    try:
        old, new = add_stored_version(hub, "1.0.0", TARGET), add_stored_version(hub, "2.0.0", TARGET)
        hub.registry.provision_device("cam-1", TARGET)
        device = _client(broker.port)
        state = DeviceState(
            device_id="cam-1",
            online=True,
            target=TARGET,
            active=InstalledModel(model="digits", version="1.0.0", sha256=old, target=TARGET),
        )
        device.publish(topics.device_topic("cam-1", "state"), encode(state), qos=1, retain=True).wait_for_publish(10)
        assert wait_until(lambda: hub.rollouts is not None, WAIT_S)
        manager = hub.rollouts
        assert manager is not None
        assert manager.wait_for(lambda: any(s.device_id == "cam-1" for s in manager.statuses()), WAIT_S)
        plan = plan_from_cli("digits:2.0.0", canary="1", waves="100", gate=False, min_devices=1)
        manager.start_rollout(plan, rollout_id="ro-kept")  # cam-1 never installs it: the rollout stays open
        assert _retained_chunks(broker.port, new) == 2
        device.loop_stop()
        broker.stop()
        broker.start()
        assert _retained_chunks(broker.port, new) in (0, 2)  # gone, unless the hub was quicker than this check
        assert wait_until(lambda: _retained_chunks(broker.port, new) == 2, WAIT_S)
    finally:
        hub.stop()
        broker.stop()
