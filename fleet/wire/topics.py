"""MQTT topic layout of wire protocol v1. Every topic the hub or an agent uses is built here.

::

    edgefleet/v1/devices/{id}/state        device -> hub   retained device state; last will marks offline
    edgefleet/v1/devices/{id}/heartbeat    device -> hub   liveness and counters, QoS 0
    edgefleet/v1/devices/{id}/events       device -> hub   update progress and results, QoS 1
    edgefleet/v1/devices/{id}/telemetry    device -> hub   telemetry batches, QoS 1, deduplicated by batch id
    edgefleet/v1/devices/{id}/fetch        device -> hub   requests for bundle chunks or TUF metadata, QoS 1
    edgefleet/v1/devices/{id}/telemetry-ack hub -> device  batch ids stored (or rejected) by the hub, QoS 1
    edgefleet/v1/devices/{id}/capture      device -> hub   sampled inputs for retraining (opt-in), QoS 1
    edgefleet/v1/devices/{id}/certificate-request device -> hub   a CSR to renew the device's TLS certificate, QoS 1
    edgefleet/v1/devices/{id}/deployment   hub -> device   retained desired deployment, QoS 1
    edgefleet/v1/devices/{id}/meta         hub -> device   TUF metadata replies, QoS 1
    edgefleet/v1/devices/{id}/refused      hub -> device   chunk requests the hub cannot serve, QoS 1
    edgefleet/v1/devices/{id}/certificate  hub -> device   the renewed certificate (or why not), QoS 1
    edgefleet/v1/bundles/{sha256}          hub -> devices  broadcast bundle chunks, QoS 1
    edgefleet/v1/bundles/{sha256}/pieces   hub -> devices  broadcast content-defined pieces (delta updates), QoS 1
    edgefleet/v1/bundles/{sha256}/retained/{index} hub -> devices  one chunk, retained while a rollout ships it, QoS 1
    edgefleet/v1/broadcast/{name}          hub -> devices  read-only fleet-wide notices (retained)

A device's broker ACL grants write on its own ``devices/{id}/`` subtree (state, heartbeat, events,
telemetry, fetch, capture, certificate-request), read on its own ``deployment``, ``meta``, ``refused``,
``telemetry-ack`` and ``certificate`` topics,
and read on ``bundles/#`` and ``broadcast/#``.
"""

from __future__ import annotations

import re
from typing import Final

from fleet.errors import ProtocolError

PROTOCOL_VERSION: Final = 1
ROOT: Final = f"edgefleet/v{PROTOCOL_VERSION}"
QOS_CONTROL: Final = 1  # every message that changes state: handlers are idempotent, duplicates are harmless
QOS_HEARTBEAT: Final = 0
DEVICE_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DEVICE_CHANNELS: Final = (
    "state", "heartbeat", "events", "telemetry", "fetch", "capture", "deployment", "meta", "refused", "telemetry-ack",
    "certificate-request", "certificate",
)  # fmt: skip


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` if it is safe to use in a topic and a file name, else raise `ProtocolError`."""
    if not DEVICE_ID_PATTERN.match(device_id):
        raise ProtocolError(
            f"invalid device id {device_id!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return device_id


def device_topic(device_id: str, channel: str) -> str:
    """Topic of one device channel, e.g. ``edgefleet/v1/devices/cam-1/state``."""
    if channel not in _DEVICE_CHANNELS:
        raise ProtocolError(f"unknown device channel {channel!r}")
    return f"{ROOT}/devices/{validate_device_id(device_id)}/{channel}"


def device_wildcard(channel: str) -> str:
    """Subscription matching one channel of every device, e.g. ``edgefleet/v1/devices/+/telemetry``."""
    if channel not in _DEVICE_CHANNELS:
        raise ProtocolError(f"unknown device channel {channel!r}")
    return f"{ROOT}/devices/+/{channel}"


def parse_device_topic(topic: str) -> tuple[str, str]:
    """Split a device topic into ``(device_id, channel)``; raise `ProtocolError` for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != ROOT or parts[2] != "devices" or parts[4] not in _DEVICE_CHANNELS:
        raise ProtocolError("not a device topic", topic=topic)
    return validate_device_id(parts[3]), parts[4]


def bundle_topic(sha256: str) -> str:
    """Broadcast topic carrying the chunks of one bundle."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ProtocolError(f"invalid bundle digest {sha256!r}")
    return f"{ROOT}/bundles/{sha256}"


def bundle_pieces_topic(sha256: str) -> str:
    """Broadcast topic carrying the content-defined pieces of one bundle (see `fleet.wire.chunk_index`)."""
    return f"{bundle_topic(sha256)}/pieces"


def retained_chunk_topic(sha256: str, index: int) -> str:
    """Topic on which the broker keeps chunk ``index`` of a bundle retained (orders with ``retained_chunks``)."""
    if index < 0:
        raise ProtocolError(f"invalid chunk index {index}")
    return f"{bundle_topic(sha256)}/retained/{index}"


def retained_chunks_filter(sha256: str) -> str:
    """Filter matching every retained chunk of a bundle: subscribing delivers all the broker keeps at once."""
    return f"{bundle_topic(sha256)}/retained/+"


def broadcast_topic(name: str) -> str:
    """Fleet-wide read-only topic."""
    if not re.fullmatch(r"[a-z0-9_-]{1,40}", name):
        raise ProtocolError(f"invalid broadcast name {name!r}")
    return f"{ROOT}/broadcast/{name}"
