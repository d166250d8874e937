"""The private Mosquitto keeps retained messages through a clean restart only when it is persistent."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.private_mosquitto import PrivateMosquitto

TOPIC = "soak/retained"
PING = "soak/ping"


def retained_after_restart(broker: PrivateMosquitto) -> bytes | None:
    """Publish a retained message, restart the broker cleanly, and read what it retained (None if nothing)."""
    publisher = paho.Client(CallbackAPIVersion.VERSION2)
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    publisher.publish(TOPIC, b"kept", qos=1, retain=True).wait_for_publish(10)
    publisher.disconnect()
    publisher.loop_stop()
    broker.stop(graceful=True)
    broker.start()
    received: list[bytes] = []
    subscribed, pinged = threading.Event(), threading.Event()

    def on_message(_client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic == PING:
            pinged.set()
        else:
            received.append(bytes(message.payload))

    reader = paho.Client(CallbackAPIVersion.VERSION2)
    reader.on_subscribe = lambda *_args: subscribed.set()
    reader.on_message = on_message
    reader.connect("127.0.0.1", broker.port)
    reader.loop_start()
    try:
        reader.subscribe([(TOPIC, 1), (PING, 1)])
        assert subscribed.wait(10)
        # the broker sends retained messages right after the subscription, on the same connection, so a
        # message published after it arrives after any retained one
        reader.publish(PING, b"", qos=1)
        assert pinged.wait(10)
    finally:
        reader.disconnect()
        reader.loop_stop()
        broker.stop()
    return received[0] if received else None


@pytest.mark.parametrize("persistent", [True, False])
def test_retained_message_survives_a_clean_restart_only_with_persistence(tmp_path: Path, persistent: bool) -> None:
    broker = PrivateMosquitto(tmp_path, persistent=persistent)
    broker.start()
    assert retained_after_restart(broker) == (b"kept" if persistent else None)
