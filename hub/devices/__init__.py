"""Devices on the broker: the one decoder of device topics, the broker connection factory, broker access
control (Mosquitto files, NATS authorization) and the embedded broker."""
