"""Devices on the broker: the one decoder of device topics, the broker connection factory, broker access
control (Mosquitto files) and the embedded broker."""
