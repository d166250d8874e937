"""A hub with in-process agents on a real broker, and a published digits model, for integration tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.config import AgentConfig
from agent.daemon import Agent
from fleet.wire.bundle import BundleManifest
from fleet.wire.contract import DataContract
from hub.app import Hub
from hub.bundles.publish import PublishedVariant
from hub.config import HubSettings
from hub.demo.model import TrainedDigits, digits_manifest

TARGET = "x86-onnx-cpu"


def manifest_for(trained: TrainedDigits, version: str, *, heavy: bool = False) -> BundleManifest:
    """The digits manifest for the harness's device target."""
    return digits_manifest(trained, version, target=TARGET, heavy=heavy)


@dataclass
class Harness:
    """Hub plus agents; everything stopped by `close`."""

    hub: Hub
    root: Path
    trained: TrainedDigits
    agents: list[Agent] = field(default_factory=list)
    prefix: str = field(default_factory=lambda: f"it-{uuid.uuid4().hex[:8]}")

    def publish(
        self,
        version: str,
        *,
        golden_outputs: np.ndarray | None = None,
        heavy: bool = False,
        contract: DataContract | None = None,
    ) -> PublishedVariant:
        """Publish the digits model as ``version`` (optionally with wrong golden outputs, or a data contract)."""
        outputs = self.trained.golden_logits if golden_outputs is None else golden_outputs
        manifest = manifest_for(self.trained, version, heavy=heavy)
        return self.hub.publish(manifest, self.trained.onnx_path, self.trained.golden_x, outputs, contract=contract)

    def agent(self, name: str, *, start: bool = True, **overrides: object) -> Agent:
        """Provision a device and create (and by default start) its agent."""
        return self.agent_on(name, TARGET, start=start, **overrides)

    def agent_on(self, name: str, target: str, *, start: bool = True, **overrides: object) -> Agent:
        """An agent on a device of ``target``."""
        agent = new_agent(self.hub, self.root, f"{self.prefix}-{name}", target, **overrides)
        if start:
            agent.start()
        self.agents.append(agent)
        return agent

    def agent_from(self, config: AgentConfig) -> Agent:
        """Start another agent process-equivalent on an existing device's config and data directory."""
        agent = Agent(config)
        agent.start()
        self.agents.append(agent)
        return agent

    def deploy(
        self,
        version: str,
        agents: list[Agent],
        *,
        allow_downgrade: bool = False,
        shadow: bool = False,
        timeout_s: float = 60.0,
    ) -> dict[str, str]:
        """Deploy and wait for every agent to finish; return the hub's per-device states."""
        deployment = self.hub.deploy(
            "digits", version, [a.config.device_id for a in agents], allow_downgrade=allow_downgrade, shadow=shadow
        )
        for agent in agents:
            agent.wait_for_deployment(deployment.id, timeout_s)
        return self.hub.wait_deployment(deployment.id, timeout_s)

    def detail(self, agent: Agent) -> str:
        """The agent's last update detail."""
        record = agent.updater.state.update if agent.updater else None
        return record.detail if record else ""

    def close(self) -> None:
        """Stop agents, then the hub."""
        for agent in self.agents:
            agent.stop()
        self.hub.stop()


def new_agent(hub: Hub, root: Path, device_id: str, target: str = TARGET, **overrides: object) -> Agent:
    """Provision ``device_id`` on ``hub`` and create (not start) its agent, with its files under ``root``."""
    _, secret = hub.registry.provision_device(device_id, target)
    directory = root / device_id
    directory.mkdir(parents=True)
    (directory / "root.json").write_bytes(hub.tuf.trusted_root())
    address = hub.broker_address
    settings: dict[str, object] = {
        "device_id": device_id,
        "target": target,
        "broker_url": address.url,
        "password": secret,
        "data_dir": directory / "data",
        "trust_root": directory / "root.json",
        "telemetry_interval_s": 3600,
        "chunk_timeout_s": 1.0,
        "download_timeout_s": 60,
    }
    settings.update(overrides)
    return Agent(AgentConfig.model_validate(settings))


def start_hub(root: Path, broker_url: str | None, database_url: str | None = None) -> Hub:
    """A started hub on the given broker (None: embedded) and database (None: SQLite)."""
    hub = Hub(
        HubSettings(
            data_dir=root / "hub",
            broker_url=broker_url,
            database_url=database_url,
            chunk_size=4096,
            rebroadcast_window_s=0.5,
        )
    )
    hub.start()
    return hub
