"""A device's kit: a loadable agent.toml, owner-only secret and key, trust root, broker CA and certificate."""

from __future__ import annotations

import stat
from pathlib import Path

from agent.config import AgentConfig
from fleet.wire.mqtt import BrokerAddress, TlsFiles
from hub.devices.pki import CertificateAuthority
from hub.devices.provisioning import DeviceKit, write_device_kit


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_plain_kit_loads_as_an_agent_config(tmp_path: Path) -> None:
    kit = DeviceKit("cam-1", "rpi4-arm64", "s3cret", BrokerAddress("10.0.0.2", 1883), b"{}", {"http_port": 8700})
    config = AgentConfig.load(write_device_kit(tmp_path / "cam-1", kit))
    assert config.device_id == "cam-1" and config.broker_url == "mqtt://10.0.0.2:1883" and config.http_port == 8700
    assert config.secret() == "s3cret" and config.trust_root == tmp_path / "cam-1" / "root.json"
    assert config.broker_tls() is None
    assert _mode(tmp_path / "cam-1") == 0o700
    assert _mode(tmp_path / "cam-1" / "device.secret") == 0o600 and _mode(tmp_path / "cam-1" / "agent.toml") == 0o600


def test_a_tls_kit_carries_the_broker_ca_and_its_own_certificate(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "pki")
    broker = BrokerAddress("broker.example", 8883, tls=TlsFiles(ca_file=str(ca.cert_file)))
    path = write_device_kit(tmp_path / "cam-2", DeviceKit("cam-2", "rpi4-arm64", "s", broker, b"{}"), ca=ca)
    config = AgentConfig.load(path)
    tls = config.broker_tls()
    assert config.broker_url == "mqtts://broker.example:8883" and tls is not None
    assert Path(tls.ca_file or "").read_bytes() == ca.cert_file.read_bytes()
    assert tls.cert_file and tls.cert_file.endswith("cam-2.crt") and _mode(Path(tls.key_file or "")) == 0o600
