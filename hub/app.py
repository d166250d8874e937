"""`Hub`: registry, artifact store, TUF repository and device traffic started and stopped as one unit.

``start()`` wires the parts: one broker connection (from `BrokerConnector`), one decoder of device topics
(`DeviceTraffic`) whose typed messages feed the registry, telemetry ingestion, bundle transfer and the rollout
manager, in that order. Then it freezes the garbage collector's view of what it built (`gc.freeze`): the
hub's hundreds of thousands of long-lived objects are no longer walked by every full collection, which at
telemetry rates cost about 40 us of CPU a batch. ``stop()`` unfreezes them, so nothing stays uncollectable.
"""

from __future__ import annotations

import functools
import gc
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fleet.wire.acl import HUB_USERNAME
from fleet.wire.bundle import BundleManifest
from fleet.wire.contract import DataContract
from fleet.wire.messages import CaptureBatch, DeviceState, UpdateEvent
from fleet.wire.mqtt import BrokerAddress, PahoBroker
from hub.auth.guard import LoginGuard
from hub.bundles.keys import passphrase_from_env
from hub.bundles.publish import PublishedVariant, publish_variant
from hub.bundles.reference import reference_profile
from hub.bundles.refresh import MetadataRefresher
from hub.bundles.store import open_store
from hub.bundles.transfer import BundleTransfer
from hub.bundles.tuf_repository import TufRepository
from hub.cluster import LeaderDuties, leadership_for
from hub.config import HubSettings
from hub.devices.certificates import CertificateSigner
from hub.devices.connection import BrokerConnector
from hub.devices.embedded_broker import EmbeddedBroker
from hub.devices.known_devices import KnownDevices
from hub.devices.nats_auth import HUB_BCRYPT_ROUNDS
from hub.devices.nats_queue import NatsQueueGroups
from hub.devices.orders import BundleSources, DeploymentOrders
from hub.devices.pki import CertificateAuthority
from hub.devices.records import DeviceRecords
from hub.devices.traffic import EVERY_CHANNEL, DeviceTraffic
from hub.monitoring.certificate_metrics import CertificateMetrics
from hub.monitoring.ingest import RetentionPolicy, TelemetryIngestor, publish_acks
from hub.monitoring.presence import DevicePresence
from hub.monitoring.service import HubMonitoring
from hub.monitoring.signing_metrics import SigningMetrics
from hub.policies.evaluator import PolicyEvaluator
from hub.private_files import create_private, private_dir
from hub.registry import Database, Deployment, Registry
from hub.registry.captures import CaptureStore
from hub.registry.credentials import hash_bcrypt
from hub.registry.policies import PolicyStore
from hub.registry.rollouts import RolloutStore
from hub.rollouts.manager import RolloutManager

log = logging.getLogger(__name__)
TERMINAL_STATES = frozenset({"done", "failed"})


class Hub:
    """The central service. ``start()`` connects everything; ``stop()`` releases every thread and port."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        private_dir(settings.data_dir)
        self.db = Database(settings.resolved_database_url())
        self.registry = Registry(self.db)
        self.store = open_store(settings.artifact_store, settings.data_dir)
        self.tuf = TufRepository(settings.data_dir / "tuf", passphrase=passphrase_from_env())
        self.metadata_refresher = MetadataRefresher(lambda: self.tuf, interval_s=settings.metadata_refresh_interval_s)
        self.leadership = leadership_for(self.db, replica=settings.replica, check_s=settings.leader_check_s)
        self.duties: LeaderDuties | None = None  # the rollout manager and metadata signing, on the leader only
        self.hub_secret = settings.hub_secret or self._load_or_create_secret()
        self.embedded: EmbeddedBroker | None = None
        self.connector: BrokerConnector | None = None
        self.broker: PahoBroker | None = None
        self.traffic: DeviceTraffic | None = None
        self.fetches: DeviceTraffic | None = None  # fetch requests, on their own connection
        self.ingestor: TelemetryIngestor | None = None
        self.transfer: BundleTransfer | None = None
        self.orders: DeploymentOrders | None = None
        self.presence: DevicePresence | None = None
        self.records: DeviceRecords | None = None
        self._event_listeners: list[Any] = []
        self._progress = threading.Condition()
        self.rollouts: RolloutManager | None = None  # while this hub leads (always, unless it is a replica)
        self.monitoring = HubMonitoring(self.registry, self.store)  # /metrics and drift/canary reports
        self.monitoring.prometheus.register(SigningMetrics(lambda: self.tuf))
        self.monitoring.prometheus.register(CertificateMetrics(settings.tls_certificates()))
        self.logins = LoginGuard(settings.login_backoff, prometheus=self.monitoring.prometheus)  # devices and API
        self.known = KnownDevices(self.registry)  # which senders are provisioned, for every decoder of this hub
        self.captures = CaptureStore(self.db)  # sampled inputs devices opted in to send
        self.policies = PolicyEvaluator(
            PolicyStore(self.db),
            self.registry,
            RolloutStore(self.db),
            self.monitoring.source,
            self._deploy_rollback,
            self.monitoring.prometheus,
            interval_s=settings.policy_interval_s,
        )

    @property
    def broker_address(self) -> BrokerAddress:
        """Where devices connect (without credentials)."""
        if self.connector is not None:
            return self.connector.device_address
        if self.settings.broker_url is None:
            raise RuntimeError("hub is not started")
        return BrokerConnector.from_url(
            self.settings.broker_url, hub_secret=self.hub_secret, tls=self.settings.broker_tls()
        ).device_address

    def start(self) -> None:
        """Start the embedded broker when no URL is configured, connect, wire the parts and subscribe; then
        freeze the objects built so far out of the collector's passes (`gc.freeze`, undone by `stop`)."""
        self._start()
        gc.collect()  # what is garbage now is freed, not frozen with the rest
        gc.freeze()

    def _start(self) -> None:
        s = self.settings
        if s.broker_url is None:
            self.embedded = EmbeddedBroker(
                s.broker_host, s.broker_port, check=self._check_credentials, tls=s.embedded_tls()
            )
            self.embedded.start()
            self.connector = BrokerConnector(
                BrokerAddress(self.embedded.local_host, self.embedded.port, tls=s.broker_tls()),
                hub_secret=self.hub_secret,
            )
        else:
            self.connector = BrokerConnector.from_url(
                s.broker_url, hub_secret=self.hub_secret, tls=s.broker_tls(), failover_urls=s.broker_failover_urls
            )
        # a broker that came back may have lost its retained messages (no persistence): a rollout's chunks again
        self.broker = broker = self.connector.connect("hub", on_connect=self._broker_connected)
        retention = RetentionPolicy(
            max_age_s=s.telemetry_max_age_s,
            max_rows=s.telemetry_max_rows,
            aggregate_max_age_s=s.telemetry_aggregate_max_age_s,
            interval_s=s.telemetry_prune_interval_s,
        )
        share = s.share_group if s.replica else None
        # telemetry (and its acknowledgements) in bulk on a connection of its own, except where NATS queue
        # groups share it
        telemetry = None if s.nats_servers() else self.connector.subscriber("hub-telemetry")
        # the other device channels in bulk too, on a connection of their own (not for a telemetry worker)
        devices = None if s.nats_servers() or s.ingest_only else self.connector.subscriber("hub-devices")
        self.traffic = traffic = DeviceTraffic(
            self._shared(broker, "hub"),
            self.registry,
            telemetry_filter=s.telemetry_filter(),
            shared_group=share,
            known=self.known,
            telemetry_source=telemetry,
            device_source=devices,
        )
        self.ingestor = TelemetryIngestor(
            self.registry,
            metrics=self.monitoring.metrics,
            retention=retention,
            acknowledge=publish_acks(telemetry or broker),
            decode=traffic.decode_telemetry_block,  # in the ingestor's decoder thread, off the MQTT dispatcher
            aggregate_window_s=s.telemetry_rollup_window_s,
            # workers sharing telemetry each merge into rows of their own: no waiting on each other's row locks
            aggregate_shard=secrets.token_hex(6) if s.shared_telemetry or s.replica else "",
        )
        traffic.on_telemetry_payload(self.ingestor.submit_payload)
        traffic.on_rejected(self._on_rejected)
        if s.ingest_only:  # a telemetry worker: the full hub owns device state, transfers and rollouts
            traffic.start(telemetry_only=True)
            return
        self.transfer = BundleTransfer(
            broker,
            self.store,
            self.tuf,
            chunk_size=s.chunk_size,
            rebroadcast_window_s=s.rebroadcast_window_s,
            gather_s=s.chunk_gather_s,
            wave_wait_s=s.chunk_wave_wait_s,
            retained_max_chunks=s.retained_chunks_max if s.bundle_transport == "mqtt" else 0,
        )
        sources = BundleSources(s.bundle_transport, tuple(s.bundle_mirrors), s.device_bundle_url())
        self.orders = DeploymentOrders(broker, self.store, self.registry, chunk_size=s.chunk_size, sources=sources)
        push = self.transfer.push if s.bundle_transport == "mqtt" else None  # http: devices pull, nothing pushed
        self.presence = DevicePresence(self.registry, offline_after_s=s.device_offline_after_s)
        self.presence.sweep()  # before subscribing: stored rows of devices that fell silent meanwhile are stale
        traffic.on_heartbeat(self.presence.heard)
        self.records = DeviceRecords(self.registry, on_events=self._events_stored)
        self.records.start()
        traffic.on_state(self._apply_state)
        traffic.on_event(self.records.event)
        # Fetch requests on a connection of their own: a wave's requests, which start its broadcast, are read while
        # its states and events still queue on the main one. Replicas: each answers its share of metadata
        # requests; the leader alone broadcasts chunks (on its own feed, see LeaderDuties).
        fetch_source = None if s.nats_servers() else self.connector.subscriber("hub-fetch")
        self.fetches = DeviceTraffic(
            broker if fetch_source is not None else self._shared(self.connector.connect("hub-fetch"), "hub-fetch"),
            self.registry,
            shared_group=share,
            known=self.known,
            device_source=fetch_source,
        )
        self.fetches.on_fetch(self.transfer.handle_metadata if s.replica else self.transfer.handle)
        traffic.on_capture(self._store_capture)
        device_ca = CertificateAuthority(s.device_ca_dir) if s.device_ca_dir else None
        traffic.on_certificate_request(CertificateSigner(broker, device_ca, days=s.device_cert_days).handle)
        # a replica's leader sees every state and event on a connection of its own; a lone hub on this one
        feed = traffic
        if s.replica:
            feed = DeviceTraffic(self.connector.connect("hub-leader"), self.registry, known=self.known)
        self.duties = LeaderDuties(
            self.registry,
            self.orders,
            self.metadata_refresher,
            self.leadership,
            feed=feed,
            own_feed=s.replica,
            on_manager=self._set_rollouts,
            push=push,
            fetch=self.transfer.handle_chunks,
            retainer=self.transfer,
        )
        self.leadership.start(on_elected=self._lead, on_deposed=self._step_down)
        self.fetches.start(channels=("fetch",))
        traffic.start(channels=tuple(c for c in EVERY_CHANNEL if c != "fetch"))
        self.presence.start()

    def _shared(self, connection: PahoBroker, role: str) -> PahoBroker | NatsQueueGroups:
        """``connection``, or with ``share_nats_url`` the same wrapped so that shared subscriptions are NATS
        queue groups (a NATS broker's MQTT has no ``$share``)."""
        servers = self.settings.nats_servers()
        if not servers:
            return connection
        name = f"edgefleet-{role}-{secrets.token_hex(4)}"
        return NatsQueueGroups(connection, servers, name=name, tls=self.settings.nats_tls())

    @functools.cached_property
    def nats_hub_hash(self) -> str:
        """A bcrypt hash of the hub's broker secret for NATS's authorization file, made once (about 0.15 s)."""
        return hash_bcrypt(self.hub_secret, rounds=HUB_BCRYPT_ROUNDS)

    def stop(self) -> None:
        """Stop in reverse order; safe to call twice."""
        self.leadership.stop()  # stops the duties when leading
        self.policies.stop()
        if self.duties is not None and self.duties.feed is not self.traffic:
            self.duties.feed.broker.close()
        self.duties = None
        self.metadata_refresher.stop()
        if self.presence is not None:
            self.presence.stop()
        if self.ingestor is not None:
            # before the traffic stops: the last writes' acknowledgements go out on the telemetry connection,
            # which stopping the traffic closes (a batch arriving meanwhile stays unacknowledged: its device
            # sends it again)
            self.ingestor.close()
        if self.traffic is not None:
            self.traffic.stop()
            if isinstance(self.traffic.broker, NatsQueueGroups):
                self.traffic.broker.close()  # its MQTT connection is self.broker, closed below
        if self.fetches is not None:
            self.fetches.stop()  # closes its bulk connection, where it has one
            if self.fetches.broker is not self.broker:  # a connection of its own (NATS queue groups)
                self.fetches.broker.close()
                if isinstance(self.fetches.broker, NatsQueueGroups):
                    self.fetches.broker.mqtt.close()
        if self.records is not None:
            self.records.close()
        if self.transfer is not None:
            self.transfer.close()
        if self.broker is not None:
            self.broker.close()
        if self.embedded is not None:
            self.embedded.stop()
        self.db.close()
        self.traffic = self.fetches = self.ingestor = self.broker = self.embedded = None
        self.transfer = self.orders = None
        self.presence = None
        self.records = None
        gc.unfreeze()  # the objects frozen at start are collectable again
        self.connector = None

    def __enter__(self) -> Hub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- operations -----------------------------------------------------------------------------------------

    def publish(
        self,
        manifest: BundleManifest,
        model_path: Path,
        selftest_inputs: np.ndarray,
        selftest_outputs: np.ndarray,
        *,
        reference: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        weights_path: Path | None = None,
        contract: DataContract | None = None,
    ) -> PublishedVariant:
        """Register ``manifest.model:manifest.version`` if new, then publish this variant's signed bundle
        (carrying ``contract``, the data contract its agents check live inputs against, when given)."""
        if not any(v.version == manifest.version for v in self.registry.list_versions(manifest.model)):
            self.registry.add_version(manifest.model, manifest.version)
        if reference is None:  # drift always has a baseline: at least the self-test vectors
            reference = reference_profile(manifest, selftest_inputs, selftest_outputs)
        return publish_variant(
            self.registry,
            self.store,
            self.tuf,
            manifest,
            model_path,
            selftest_inputs,
            selftest_outputs,
            reference=reference,
            metrics=metrics,
            weights_path=weights_path,
            contract=contract,
        )

    def deploy(
        self, model: str, version: str, device_ids: list[str], *, allow_downgrade: bool = False, shadow: bool = False
    ) -> Deployment:
        """Create a deployment and send each device the order for its target's variant.

        With ``shadow`` the devices install and check the version, then run it beside their active model on a
        sampled share of requests (agreement and latency reported in telemetry) without changing answers.
        """
        if self.orders is None:
            raise RuntimeError("hub is not started")
        deployment, chosen = self.registry.create_deployment(
            model, version, device_ids, allow_downgrade=allow_downgrade
        )
        if self.transfer is not None and self.settings.bundle_transport == "mqtt":  # see BundleTransfer.push
            for sha in {variant.bundle_sha256 for variant in chosen.values()}:
                devices = [self.registry.get_device(d) for d, v in chosen.items() if v.bundle_sha256 == sha]
                self.transfer.push(sha, [d.id for d in devices if d.online])
        orders = {
            device_id: self.orders.order_for(
                deployment.id,
                variant.bundle_sha256,
                model=model,
                version=version,
                target=variant.target,
                tuf_target=variant.tuf_target,
                allow_downgrade=allow_downgrade,
                shadow=shadow,
            )
            for device_id, variant in chosen.items()
        }
        self.orders.send_all(orders)
        return deployment

    def _lead(self, epoch: int) -> None:
        assert self.duties is not None  # set before the leadership starts
        self.duties.lead(epoch)
        self.policies.start()  # policies pause rollouts and roll cohorts back: the leader's job

    def _step_down(self) -> None:
        self.policies.stop()
        if self.duties is not None:
            self.duties.step_down()

    def _deploy_rollback(self, model: str, version: str, device_ids: list[str]) -> str:
        return self.deploy(model, version, device_ids, allow_downgrade=True).id

    def on_update_event(self, listener: Any) -> Any:
        """Call ``listener(event)`` for every device update event; return a function that removes it."""
        self._event_listeners.append(listener)
        return lambda: self._event_listeners.remove(listener)

    def wait_deployment(self, deployment_id: str, timeout_s: float) -> dict[str, str]:
        """Block until every device of the deployment finished (done or failed); return state per device."""
        deadline = time.monotonic() + timeout_s

        def states() -> dict[str, str]:
            return {row.device_id: row.state for row in self.registry.deployment_devices(deployment_id)}

        with self._progress:
            while True:
                current = states()
                remaining = deadline - time.monotonic()
                if all(s in TERMINAL_STATES for s in current.values()) or remaining <= 0:
                    return current
                self._progress.wait(remaining)

    def _set_rollouts(self, manager: RolloutManager | None) -> None:
        self.rollouts = manager

    def _broker_connected(self) -> None:
        manager = self.rollouts
        if manager is not None:  # not on the first connection: no one leads yet
            manager.broker_reconnected()

    def _apply_state(self, state: DeviceState) -> None:
        assert self.records is not None  # set before subscribing
        self.records.state(state)  # the decoder checked the device is provisioned
        self.monitoring.on_device_state(state)

    def _events_stored(self, events: list[UpdateEvent]) -> None:
        for event in events:
            for listener in list(self._event_listeners):
                listener(event)
        with self._progress:
            self._progress.notify_all()

    def _store_capture(self, batch: CaptureBatch) -> None:
        self.captures.add(batch, now=time.time(), max_age_s=self.settings.capture_max_age_s)

    def _on_rejected(self, channel: str, _error: Exception) -> None:
        if channel == "telemetry" and self.ingestor is not None:
            self.ingestor.reject()

    def _check_credentials(self, username: str, password: str, address: str) -> bool:
        if username == HUB_USERNAME:  # a 256-bit secret, compared in constant time: no back-off to lock it out
            return secrets.compare_digest(password, self.hub_secret)
        return self.logins.check_device(
            username, address, lambda: self.registry.check_device_secret(username, password)
        )

    def _load_or_create_secret(self) -> str:
        path = self.settings.data_dir / "hub.secret"
        if path.exists():
            return path.read_text().strip()
        secret = secrets.token_urlsafe(32)
        create_private(path)
        path.write_text(secret)
        return secret
