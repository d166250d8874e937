"""A protocol-level device simulator: thousands of devices speaking the wire protocol on one event loop.

- `mqtt_codec`: the MQTT 3.1.1 packets a device needs, without a client library
- `session`: one device's connection (`MqttSession`, an asyncio protocol)
- `device`: what a device sends and how it follows orders (`SimDevice`)
- `telemetry`: valid telemetry batches, encoded once and re-stamped (`BatchTemplate`)
- `fleet`: the event loop driving them all, paced connects, counters (`SimFleet`)
"""

from bench.devsim.device import SimDevice
from bench.devsim.fleet import SimFleet
from bench.devsim.telemetry import BatchTemplate

__all__ = ["BatchTemplate", "SimDevice", "SimFleet"]
