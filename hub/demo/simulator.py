"""A simulated fleet: provisioned devices, each a real ``edgefleet-agent`` process with its own config.

Used by the demo and the integration tests. Agents are separate processes (as on real devices) talking
to the hub only through the broker; their local inference APIs listen on loopback ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hub.app import Hub
from hub.devices.pki import CertificateAuthority
from hub.devices.provisioning import DeviceKit, write_device_kit
from hub.errors import HubError


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SimulatedDevice:
    """One agent process and where to reach it."""

    device_id: str
    target: str
    config_path: Path
    http_port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def api_url(self) -> str:
        """The device's local inference API."""
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class SimulatedFleet:
    """Provision ``count`` devices on ``hub`` and run them as agent processes under ``root``; with ``ca``, each
    device gets its own client certificate for a TLS broker."""

    hub: Hub
    root: Path
    ca: CertificateAuthority | None = None
    devices: list[SimulatedDevice] = field(default_factory=list)

    def provision(
        self,
        count: int,
        target: str,
        *,
        prefix: str = "sim",
        labels: dict[str, str] | None = None,
        telemetry_interval_s: float = 1.0,
    ) -> list[SimulatedDevice]:
        """Create devices with fresh credentials, trust root and config files."""
        address = self.hub.broker_address
        trust_root = self.hub.tuf.trusted_root()
        created = []
        for _ in range(count):
            device_id = f"{prefix}-{len(self.devices) + 1:03d}"
            _, secret = self.hub.registry.provision_device(device_id, target, labels or {})
            port = free_port()
            settings = {"http_port": port, "telemetry_interval_s": telemetry_interval_s, "chunk_timeout_s": 2.0}
            kit = DeviceKit(device_id, target, secret, address, trust_root, settings)
            config = write_device_kit(self.root / device_id, kit, ca=self.ca)
            device = SimulatedDevice(device_id, target, config, port)
            self.devices.append(device)
            created.append(device)
        return created

    def start(self, devices: list[SimulatedDevice] | None = None, *, timeout_s: float = 60.0) -> None:
        """Start agent processes and wait until each local API answers."""
        chosen = devices or self.devices
        for device in chosen:
            device.log_path = device.config_path.parent / "agent.log"
            with device.log_path.open("ab") as log_file:
                device.process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "agent.cli",
                        "run",
                        "--config",
                        str(device.config_path),
                        "--log-level",
                        "WARNING",
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1.0) as client:
            for device in chosen:
                while True:
                    if device.process is not None and device.process.poll() is not None:
                        raise HubError(
                            f"agent {device.device_id} exited with {device.process.returncode}: {self.tail(device)}"
                        )
                    try:
                        if client.get(f"{device.api_url}/v1/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise HubError(
                            f"agent {device.device_id} did not come up in {timeout_s:.0f} s: {self.tail(device)}"
                        )
                    time.sleep(0.1)  # polling a child process's port: there is no event to wait on

    def stop(self, devices: list[SimulatedDevice] | None = None, *, timeout_s: float = 30.0) -> None:
        """SIGTERM every agent (it flushes telemetry and says offline), then wait; kill stragglers."""
        chosen = devices or self.devices
        for device in chosen:
            if device.process is not None and device.process.poll() is None:
                device.process.send_signal(signal.SIGTERM)
        for device in chosen:
            if device.process is None:
                continue
            try:
                device.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                device.process.kill()
                device.process.wait()
            device.process = None

    def kill(self, device: SimulatedDevice) -> None:
        """SIGKILL one agent, as a power cut would."""
        if device.process is not None:
            device.process.kill()
            device.process.wait()
            device.process = None

    @staticmethod
    def tail(device: SimulatedDevice, lines: int = 15) -> str:
        """The end of a device's log."""
        if device.log_path is None or not device.log_path.exists():
            return "(no log)"
        return "\n".join(device.log_path.read_text(errors="replace").splitlines()[-lines:])
