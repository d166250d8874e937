"""Everything one device needs, written into one directory: a ready ``agent.toml``, its secret, the hub's TUF
trust root, and for a TLS broker the broker's CA and (when the fleet has a CA) the device's own certificate.

Secrets and keys are owner-only (0600) in an owner-only directory (0700)::

    kit = write_device_kit(Path("out/cam-1"), DeviceKit(device_id="cam-1", target="rpi4-arm64", secret=secret,
                           broker=hub.broker_address, trust_root=hub.tuf.trusted_root()), ca=ca)
    # copy out/cam-1 to the device; run `edgefleet-agent run --config agent.toml`
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from fleet.wire.mqtt import BrokerAddress
from hub.devices.pki import CertificateAuthority

__all__ = ["AGENT_CONFIG", "DeviceKit", "extract_device_kit", "kit_archive", "write_device_kit"]

AGENT_CONFIG = "agent.toml"


@dataclass(frozen=True)
class DeviceKit:
    """What goes into a device's directory; ``settings`` adds or overrides `agent.toml` keys."""

    device_id: str
    target: str
    secret: str
    broker: BrokerAddress
    trust_root: bytes
    settings: dict[str, Any] = field(default_factory=dict)


def _private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def write_device_kit(directory: Path, kit: DeviceKit, *, ca: CertificateAuthority | None = None) -> Path:
    """Write the device's files into ``directory`` (created owner-only); return the path of ``agent.toml``.

    Paths inside ``agent.toml`` are relative, so the directory can be copied to the device as it is.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    _private(directory / "device.secret", kit.secret.encode())
    (directory / "root.json").write_bytes(kit.trust_root)
    config: dict[str, Any] = {
        "device_id": kit.device_id,
        "target": kit.target,
        "broker_url": kit.broker.url,
        "password_file": "device.secret",
        "trust_root": "root.json",
        "data_dir": "data",
    }
    if kit.broker.tls is not None:
        if kit.broker.tls.ca_file:
            shutil.copyfile(kit.broker.tls.ca_file, directory / "broker-ca.crt")
            config["broker_ca_file"] = "broker-ca.crt"
        if ca is not None:
            issued = ca.issue_client(directory, kit.device_id)
            config["broker_cert_file"] = issued.cert_file.name
            config["broker_key_file"] = issued.key_file.name
    config.update(kit.settings)
    path = directory / AGENT_CONFIG
    _private(path, tomli_w.dumps(config).encode())
    return path


def kit_archive(kit: DeviceKit, *, ca: CertificateAuthority | None = None) -> bytes:
    """The device's directory (`write_device_kit`) as a gzipped tar whose members keep their owner-only modes."""
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / kit.device_id
        write_device_kit(directory, kit, ca=ca)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for path in sorted(directory.iterdir()):
                archive.add(path, arcname=path.name)
    return buffer.getvalue()


def extract_device_kit(archive: bytes, directory: Path) -> Path:
    """Unpack a `kit_archive` into ``directory`` (created owner-only); return the path of ``agent.toml``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(directory, filter="data")  # the data filter refuses absolute paths, links out and devices
    return directory / AGENT_CONFIG
