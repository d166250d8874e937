"""`ProbeClient`: a bare paho MQTT client for broker access tests, queuing what it receives and each SUBACK."""

from __future__ import annotations

import queue
import ssl

import paho.mqtt.client as mqtt

WAIT_S = 15.0


class ProbeClient:
    """Connects to ``127.0.0.1:port`` as ``client_id``, with a login and a TLS context where given."""

    def __init__(
        self,
        port: int,
        *,
        client_id: str,
        user: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subacks: queue.Queue[bool] = queue.Queue()
        self.connack: queue.Queue[bool] = queue.Queue()
        self.paho = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if tls is not None:
            self.paho.tls_set_context(tls)
        if user is not None:
            self.paho.username_pw_set(user, password)
        self.paho.reconnect_delay_set(0.05, 0.05)  # a refused client's loop thread stops at once when closed
        self.paho.on_connect = lambda _c, _u, _f, code, _p: self.connack.put(not code.is_failure)
        self.paho.on_message = lambda _c, _u, m: self.received.put((m.topic, m.payload))
        self.paho.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(not codes[0].is_failure)
        self.paho.on_disconnect = lambda *_: self.connack.put(False)  # closed before or instead of a CONNACK
        self.error: Exception | None = None
        try:
            self.paho.connect("127.0.0.1", port)
        except (OSError, ssl.SSLError) as exc:  # the TLS handshake itself refused
            self.error = exc
            return
        self.paho.loop_start()

    def accepted(self) -> bool:
        """Whether the broker accepted the session (False: refused in CONNACK, TLS or by closing)."""
        if self.error is not None:
            return False
        try:
            return self.connack.get(timeout=WAIT_S)
        except queue.Empty:
            return False

    def subscribe(self, topic: str) -> bool:
        """Subscribe at QoS 1; whether the broker granted it."""
        self.paho.subscribe(topic, qos=1)
        return self.subacks.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait until it has left."""
        self.paho.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def next(self) -> tuple[str, bytes]:
        """The next message received (queue.Empty after WAIT_S)."""
        return self.received.get(timeout=WAIT_S)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.paho.disconnect()
        self.paho.loop_stop()
