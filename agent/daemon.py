"""`Agent`: the device daemon wiring broker, updater, inference, telemetry and the local API together."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from agent.capture import InputCapture
from agent.certificates import CertificateRenewal
from agent.config import AgentConfig
from agent.errors import AgentError, CertificateError, ReplayedOrderError
from agent.http_api import ApiLimits, LocalApi
from agent.http_download import HttpDownloader
from agent.inference import InferenceService
from agent.link import BrokerLink
from agent.offload import OffloadClient
from agent.range_client import RangeClient
from agent.state_store import StateStore
from agent.telemetry import Outbox, TelemetryCollector, TelemetrySender
from agent.transfer import ChunkDownloader, MetadataClient
from agent.update import Updater
from agent.verifier import BundleVerifier
from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.backoff import Backoff
from fleet.wire.messages import DeploymentOrder, DeviceState, Heartbeat, UpdateEvent, UpdateState, decode, encode
from fleet.wire.mqtt import BrokerAddress, PahoBroker, Will
from fleet.wire.transport import Message

log = logging.getLogger(__name__)
_STOP = object()


def _agent_version() -> str:
    try:
        return version("edgefleet")
    except PackageNotFoundError:
        return "dev"


class Agent:
    """One device. ``start()`` serves at once and connects in the background; ``stop()`` says goodbye."""

    def __init__(self, config: AgentConfig, *, before_step: Callable[[UpdateState], None] | None = None) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.collector = TelemetryCollector(config.device_id, config.target)
        self.capture = (
            InputCapture(
                self.data_dir / "capture",
                config.device_id,
                config.target,
                rate=config.capture_rate,
                max_per_hour=config.capture_max_per_hour,
                max_bytes=config.capture_max_bytes,
            )
            if config.capture_rate > 0
            else None
        )
        offload = (
            OffloadClient(config.offload_url, timeout_s=config.offload_timeout_s, token=config.offload_token())
            if config.offload_url
            else None
        )
        self.service = InferenceService(
            self.collector,
            offload=offload,
            cascade_threshold=config.cascade_threshold,
            shadow_sample_rate=config.shadow_sample_rate,
            refuse_contract_violations=config.refuse_contract_violations,
            capture=self.capture,
        )
        self.outbox = Outbox(self.data_dir / "outbox", max_batches=config.outbox_max_batches)
        self.sender = TelemetrySender(
            self.outbox, config.device_id, self._publish_and_wait, ack_timeout_s=config.telemetry_ack_timeout_s
        )
        self.store = StateStore(self.data_dir / "state.json")
        self._before_step = before_step
        self._orders: queue.Queue[Any] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at = time.monotonic()
        self._update_state = UpdateState.IDLE
        self._deployment_id: str | None = None
        self.update_finished = threading.Condition()
        self.finished_deployments: dict[str, UpdateState] = {}
        self.link: BrokerLink | None = None
        self.certificates: CertificateRenewal | None = None  # with a client certificate: renews it in time
        self.api: LocalApi | None = None
        self.updater: Updater | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self, *, online_timeout_s: float = 15.0) -> bool:
        """Load the installed model, serve the local API, then connect to the broker in the background.

        Return whether the broker connection came up within ``online_timeout_s`` (0: do not wait); either way
        the agent keeps serving and keeps trying to connect, with backoff, until `stop`.
        """
        cfg = self.config
        try:
            trust_root = cfg.trust_root.read_bytes()
        except OSError as exc:
            raise AgentError(f"cannot read trust root {cfg.trust_root}: {exc}") from exc
        nodes = [BrokerAddress.from_url(url, tls=cfg.broker_tls()) for url in cfg.broker_nodes()]
        address = nodes[0].with_credentials(cfg.device_id, cfg.secret())
        failover = [(node.host, node.port) for node in nodes]
        attempts = itertools.count()
        will = Will(
            topics.device_topic(cfg.device_id, "state"),
            encode(DeviceState(device_id=cfg.device_id, online=False, target=cfg.target)),
        )

        if cfg.broker_cert_file is not None and cfg.broker_key_file is not None:
            self.certificates = CertificateRenewal(
                cfg.device_id,
                cfg.broker_cert_file,
                cfg.broker_key_file,
                renew_before=dt.timedelta(days=cfg.cert_renew_before_days),
            )
            self.certificates.recover()  # before the TLS files are read: a crash may have left a swap half done
        if address.tls is not None:
            address.tls.context()  # unreadable TLS files are a setup error that waiting will not fix: fail now

        def connect(on_ready: Callable[[], None]) -> PahoBroker:
            host, port = failover[next(attempts) % len(failover)]  # a node that cannot be reached: the next one
            return PahoBroker(
                BrokerAddress(host, port, address.username, address.password, address.tls),
                failover=failover,
                client_id=cfg.device_id,
                will=will,
                on_connect=on_ready,
                connect_timeout_s=cfg.connect_timeout_s,
            )

        self.link = link = BrokerLink(
            connect,
            on_online=self._announce,
            backoff=Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s),
            attempt_timeout_s=cfg.connect_timeout_s,
            where=", ".join(f"{host}:{port}" for host, port in failover),
        )
        metadata = MetadataClient(link, cfg.device_id, timeout_s=cfg.metadata_timeout_s)
        secret = cfg.secret()
        http = HttpDownloader(
            self.data_dir / "downloads",
            RangeClient(timeout_s=cfg.bundle_timeout_s, ca_file=cfg.bundle_ca_file),
            credentials=(cfg.device_id, secret) if secret else None,
            attempts=cfg.bundle_attempts,
            retry_initial_s=cfg.bundle_retry_initial_s,
            retry_max_s=cfg.bundle_retry_max_s,
        )
        downloader = ChunkDownloader(
            link,
            cfg.device_id,
            self.data_dir / "downloads",
            chunk_timeout_s=cfg.chunk_timeout_s,
            ask_after_s=cfg.chunk_ask_after_s,
            index_source=metadata.get,
            http=http,
        )
        verifier = BundleVerifier(self.data_dir / "tuf", trust_root, metadata.get)
        self.updater = Updater(
            self.store,
            downloader,
            verifier,
            self.data_dir / "slots",
            activate=self.service.activate,
            activate_shadow=self.service.set_shadow,
            report=self._report,
            download_timeout_s=cfg.download_timeout_s,
            before_step=self._before_step,
        )
        self.service.activate(self.updater.load_active())
        self.service.set_shadow(self.updater.load_shadow())
        if cfg.http_port is not None:
            limits = ApiLimits(
                cfg.http_max_body_bytes, cfg.http_max_batch_rows, cfg.http_read_timeout_s, cfg.http_max_connections
            )
            self.api = LocalApi(self.service, cfg.http_host, cfg.http_port, limits=limits)
            self.api.start()
        link.subscribe(self.sender.ack_topic, self.sender.on_ack, qos=1)
        pending = self.updater.pending()
        if pending is not None:
            self._orders.put(pending)  # before the retained order the broker replays, which is newer
        link.subscribe(topics.device_topic(cfg.device_id, "deployment"), self._on_deployment, qos=1)
        self._spawn(self._update_loop, "updates")
        self._spawn(self._telemetry_loop, "telemetry")
        if self.certificates is not None:
            self.certificates.attach(link)
            self._spawn(self._certificate_loop, "certificates")
        link.start()
        return online_timeout_s > 0 and link.wait_connected(online_timeout_s)

    @property
    def broker(self) -> PahoBroker | None:
        """The broker connection, once it was established."""
        return self.link.broker if self.link is not None else None

    def stop(self) -> None:
        """Flush telemetry, mark the device offline (clean disconnect) and join every thread."""
        self._stopping.set()
        self._orders.put(_STOP)
        if self.certificates is not None:
            self.certificates.cancel()
        if self.link is not None and self.link.broker is None:
            self.link.close()  # never connected: stop trying, and release an update waiting for the link
        for thread in self._threads:
            thread.join(timeout=30)
        if self.api is not None:
            self.api.stop()
        self.service.close()
        self.flush_telemetry()  # offline, this still moves recorded telemetry to the outbox on disk
        if self.link is not None:
            if self.link.connected:
                self.link.publish_and_wait(
                    topics.device_topic(self.config.device_id, "state"),
                    encode(self._state(online=False)),
                    retain=True,
                    timeout_s=5,
                )
            self.link.close()

    # -- operations -------------------------------------------------------------------------------------------

    def flush_telemetry(self) -> int:
        """Move recorded telemetry to the outbox and send what the broker acknowledges; return sent count."""
        for batch in self.collector.drain():
            self.outbox.put(batch)
        if self.capture is not None:
            self.capture.spool()
        if self.link is None or not self.link.connected:
            return 0
        sent = self.sender.flush()
        if self.capture is not None:
            self.capture.send(self._publish_and_wait)
        return sent

    def wait_for_deployment(self, deployment_id: str, timeout_s: float) -> UpdateState | None:
        """Block until the deployment finished here; return its final state (None on timeout)."""
        with self.update_finished:
            self.update_finished.wait_for(lambda: deployment_id in self.finished_deployments, timeout_s)
            return self.finished_deployments.get(deployment_id)

    # -- internals --------------------------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"{self.config.device_id}-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _state(self, *, online: bool = True) -> DeviceState:
        state = self.store.load() if self.updater is None else self.updater.state
        return DeviceState(
            device_id=self.config.device_id,
            online=online,
            target=self.config.target,
            agent_version=_agent_version(),
            active=state.active.installed() if state.active else None,
            last_known_good=state.last_known_good.installed() if state.last_known_good else None,
            update_state=self._update_state,
            deployment_id=self._deployment_id,
            ts=time.time(),
        )

    def _announce(self) -> None:
        self.sender.resend_all()  # acknowledgements sent while the link was down are lost
        if self.link is not None and self.link.broker is not None and not self._stopping.is_set():
            self.link.publish(
                topics.device_topic(self.config.device_id, "state"), encode(self._state()), qos=1, retain=True
            )

    def _publish_and_wait(self, topic: str, payload: bytes) -> bool:
        return self.link is not None and self.link.publish_and_wait(topic, payload, timeout_s=10)

    def _on_deployment(self, message: Message) -> None:
        if not message.payload:
            return
        try:
            order = decode(DeploymentOrder, message.payload, topic=message.topic)
        except ProtocolError as exc:
            log.warning("%s: ignored deployment order: %s", self.config.device_id, exc)
            return
        if order.target != self.config.target:
            self._report(
                order,
                UpdateState.FAILED,
                False,
                f"order is for target {order.target}, this device is {self.config.target}",
                None,
            )
            return
        self._orders.put(order)

    def _update_loop(self) -> None:
        assert self.link is not None and self.updater is not None  # set in start() before this thread runs
        while not self._stopping.is_set():
            order = self._orders.get()
            if order is _STOP or not self.link.wait_first_connection():
                return
            while not self._orders.empty():  # only the newest desired state matters
                newer = self._orders.get()
                if newer is _STOP:
                    return
                order = newer
            try:
                final = self.updater.apply(order)
            except ReplayedOrderError as exc:
                log.warning("%s: refused deployment order: %s", self.config.device_id, exc)
                continue  # nothing to report: the hub never sent this order now
            except Exception as exc:  # keep serving whatever happens to one update
                log.exception("%s: update %s crashed", self.config.device_id, order.deployment_id)
                self._report(order, UpdateState.FAILED, False, f"agent error: {exc}", None)
                final = UpdateState.FAILED
            with self.update_finished:
                self.finished_deployments[order.deployment_id] = final
                self.update_finished.notify_all()

    def _telemetry_loop(self) -> None:
        next_heartbeat = 0.0
        while not self._stopping.wait(self.config.telemetry_interval_s):
            try:
                self.flush_telemetry()
                if time.monotonic() >= next_heartbeat and self.link is not None and self.link.connected:
                    beat = Heartbeat(
                        device_id=self.config.device_id,
                        ts=time.time(),
                        uptime_s=time.monotonic() - self._started_at,
                        requests_total=self.service.requests_total,
                    )
                    self.link.publish(topics.device_topic(self.config.device_id, "heartbeat"), encode(beat), qos=0)
                    next_heartbeat = time.monotonic() + self.config.heartbeat_interval_s
            except Exception:
                log.exception("%s: telemetry cycle failed", self.config.device_id)

    def _certificate_loop(self) -> None:
        assert self.link is not None and self.certificates is not None  # set in start() before this thread runs
        cfg = self.config
        while self.link.wait_first_connection() and not self._stopping.is_set():
            wait_s = cfg.cert_check_interval_s
            try:
                if self.certificates.due():
                    self.certificates.renew(cfg.cert_request_timeout_s)
            except CertificateError as exc:
                log.warning("%s: certificate renewal: %s", cfg.device_id, exc)
                wait_s = min(wait_s, 10 * cfg.cert_request_timeout_s)  # try again sooner than the next check
            if self._stopping.wait(wait_s):
                return

    def _report(
        self, order: DeploymentOrder, state: UpdateState, ok: bool, detail: str, progress: float | None
    ) -> None:
        if self.link is None or self.link.broker is None:
            return
        changed = state != self._update_state or self._deployment_id != order.deployment_id
        self._update_state, self._deployment_id = state, order.deployment_id
        if progress is not None and not changed:
            return  # progress within a state is not worth a message per chunk
        event = UpdateEvent(
            device_id=self.config.device_id,
            deployment_id=order.deployment_id,
            state=state,
            ok=ok,
            detail=detail[:2000],
            progress=progress,
            ts=time.time(),
        )
        self.link.publish(topics.device_topic(self.config.device_id, "events"), encode(event), qos=1)
        if changed:
            self._announce()
