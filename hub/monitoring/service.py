"""Monitoring inside the running hub: its Prometheus registry and `FleetMetrics`, device and rollout gauges
refreshed from the database, and the `MonitoringSource` the REST API and CLI build reports from.

- drift references come from the model version's bundles (``reference.json``, a `ReferenceProfile`);
- rollouts come from the rollout table (`hub.rollouts.RolloutStore`); a deployment id also works
  (`hub.monitoring.registry_source.RegistrySource` falls back to deployments).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zipfile
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector
from sqlmodel import col, func, select

from fleet.rollout import RolloutSnapshot
from fleet.telemetry import ReferenceProfile
from fleet.wire.bundle import REFERENCE_NAME
from fleet.wire.messages import DeviceState
from hub.bundles.store import ArtifactStore
from hub.errors import NotFoundError
from hub.monitoring.metrics import FleetMetrics
from hub.monitoring.queries import RolloutView
from hub.monitoring.registry_source import RegistrySource
from hub.registry import Device, Registry, RolloutRow

if TYPE_CHECKING:
    from fleet.canary import CanaryReport
    from fleet.drift import DriftReport

__all__ = ["HubMonitoring", "bundle_reference", "hub_source", "rollout_view"]

log = logging.getLogger(__name__)
FINISHED_ROLLOUT_SHOWN_S = 3600.0


def bundle_reference(registry: Registry, store: ArtifactStore, model: str, version: str) -> ReferenceProfile | None:
    """The drift reference shipped in a bundle of ``model:version`` (the first variant carrying one)."""
    try:
        variants = registry.list_variants(model, version)
    except NotFoundError:
        return None
    for variant in variants:
        try:
            with zipfile.ZipFile(store.path(variant.bundle_sha256)) as archive:
                if REFERENCE_NAME not in archive.namelist():
                    continue
                return ReferenceProfile.model_validate(json.loads(archive.read(REFERENCE_NAME)))
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            log.warning("bundle %s of %s:%s has no readable reference: %s", variant.bundle_sha256, model, version, exc)
    return None


def rollout_view(registry: Registry, rollout_id: str) -> RolloutView | None:
    """What canary analysis needs of a stored rollout: its canary devices and time window (None: unknown)."""
    with registry.db.session() as session:
        row = session.get(RolloutRow, rollout_id)
    if row is None:
        return None
    snapshot = RolloutSnapshot.model_validate_json(row.snapshot)
    return RolloutView(
        rollout_id=snapshot.rollout_id,
        model=snapshot.plan.model,
        candidate_version=snapshot.plan.version,
        canary_device_ids=sorted(d.device_id for d in snapshot.devices.values() if d.canary),
        window_start=snapshot.created_at,
        window_end=snapshot.updated_at if snapshot.final else None,
        canary_config=snapshot.plan.gate.canary if snapshot.plan.gate is not None else None,
    )


def hub_source(registry: Registry, store: ArtifactStore) -> RegistrySource:
    """A monitoring source over a hub's registry, bundles and rollouts."""
    return RegistrySource(
        registry,
        reference=lambda model, version: bundle_reference(registry, store, model, version),
        rollout=lambda rollout_id: rollout_view(registry, rollout_id),
    )


class HubMonitoring:
    """The hub's own Prometheus registry with the fleet metrics, kept current from the database.

    Device counts are refreshed when a device reports its state (at most every ``refresh_s``) and at every
    scrape; rollout states at every scrape. Reports computed through the API are published too.
    """

    def __init__(
        self, registry: Registry, store: ArtifactStore, *, refresh_s: float = 1.0, process_metrics: bool = True
    ) -> None:
        self.hub_registry = registry
        self.store = store
        self.prometheus = CollectorRegistry(auto_describe=True)
        if process_metrics:
            ProcessCollector(registry=self.prometheus)
        self.metrics = FleetMetrics(self.prometheus)
        self.refresh_s = refresh_s
        self._last_devices = 0.0
        self._lock = threading.Lock()
        self._rollouts_shown: set[str] = set()

    def source(self) -> RegistrySource:
        """Where drift and canary reports read telemetry, references and rollouts."""
        return hub_source(self.hub_registry, self.store)

    def on_device_state(self, _state: DeviceState) -> None:
        """A device reported its state: refresh the online gauges (throttled)."""
        if time.monotonic() - self._last_devices >= self.refresh_s:
            self.refresh_devices()

    def refresh_devices(self) -> None:
        """Devices online and registered per target, counted in the database (all hub workers' updates)."""
        with self._lock:
            self._last_devices = time.monotonic()
            query = select(Device.target, Device.online, func.count()).group_by(col(Device.target), col(Device.online))
            with self.hub_registry.db.session() as session:
                rows = list(session.exec(query))
            online: dict[str, int] = {}
            registered: dict[str, int] = {}
            for target, is_online, count in rows:
                registered[target] = registered.get(target, 0) + int(count)
                online[target] = online.get(target, 0) + (int(count) if is_online else 0)
            self.metrics.set_devices(online, registered)

    def refresh_rollouts(self, now: float | None = None) -> None:
        """Rollout state series of open rollouts and of those that ended within the last hour."""
        now = time.time() if now is None else now
        with self.hub_registry.db.session() as session:
            rows = list(session.exec(select(RolloutRow)))
        shown: set[str] = set()
        for row in rows:
            if row.final and now - row.updated_at > FINISHED_ROLLOUT_SHOWN_S:
                continue
            self.metrics.set_rollout_state(row.id, row.model, row.version, row.state)
            shown.add(row.id)
        with self._lock:
            gone = self._rollouts_shown - shown
            self._rollouts_shown = shown
        for rollout_id in gone:
            self.metrics.forget_rollout(rollout_id)

    def record_drift(self, report: DriftReport) -> None:
        """Publish a drift report's scores."""
        self.metrics.record_drift(report)

    def record_canary(self, rollout_id: str, report: CanaryReport) -> None:
        """Publish a canary report's score."""
        self.metrics.record_canary(rollout_id, report)

    def exposition(self) -> bytes:
        """The Prometheus text exposition, after refreshing device and rollout gauges."""
        try:
            self.refresh_devices()
            self.refresh_rollouts()
        except Exception:  # a scrape still answers with what it has
            log.exception("refreshing fleet gauges for /metrics failed")
        return generate_latest(self.prometheus)
