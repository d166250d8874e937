"""The hub's registry: models, semver versions, per-target variants, devices, deployments, telemetry."""

from hub.registry.access import AccessStore
from hub.registry.access_tables import ApiToken, AuditEntry
from hub.registry.capture_tables import CaptureRow
from hub.registry.db import Database
from hub.registry.leader_tables import LeaderRow
from hub.registry.policy_tables import ModelPolicyRow, PolicyEventRow
from hub.registry.repository import Registry
from hub.registry.rollout_tables import RolloutCommandRow, RolloutDeviceError, RolloutOutbox, RolloutRow
from hub.registry.tables import (
    Deployment,
    DeploymentDevice,
    Device,
    Model,
    ModelVersion,
    TelemetryRecord,
    Variant,
)
from hub.registry.telemetry_tables import TelemetryDeviceWindow, TelemetryWindowAggregate

__all__ = [
    "AccessStore",
    "ApiToken",
    "AuditEntry",
    "CaptureRow",
    "Database",
    "Deployment",
    "DeploymentDevice",
    "Device",
    "LeaderRow",
    "Model",
    "ModelPolicyRow",
    "ModelVersion",
    "PolicyEventRow",
    "Registry",
    "RolloutCommandRow",
    "RolloutDeviceError",
    "RolloutOutbox",
    "RolloutRow",
    "TelemetryDeviceWindow",
    "TelemetryRecord",
    "TelemetryWindowAggregate",
    "Variant",
]
