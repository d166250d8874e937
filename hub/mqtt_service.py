"""The hub's MQTT side: device state, events, telemetry in; deployments, metadata, bundle chunks out."""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable

from fleet import topics
from fleet.errors import ProtocolError
from fleet.messages import (
    DeploymentOrder,
    DeviceState,
    FetchRequest,
    MetadataReply,
    TelemetryBatch,
    UpdateEvent,
    decode,
    encode,
    encode_chunk,
)
from fleet.transport import Broker, Message, Unsubscribe
from hub.errors import HubError
from hub.ingest import TelemetryIngestor
from hub.registry import Registry
from hub.store import ArtifactStore
from hub.tuf_repo import TufRepository

log = logging.getLogger(__name__)


class HubMqtt:
    """Wires the registry, store and TUF repository to the broker.

    Bundle chunks go to one broadcast topic per bundle; a chunk already sent within
    ``rebroadcast_window_s`` is not sent again, so a wave of devices fetching together costs about one
    bundle of egress, and a device that missed chunks asks for just those.
    """

    def __init__(self, broker: Broker, registry: Registry, store: ArtifactStore, tuf: TufRepository,
                 ingestor: TelemetryIngestor, *, chunk_size: int = 64 * 1024, rebroadcast_window_s: float = 2.0,
                 on_event: Callable[[UpdateEvent], None] | None = None,
                 on_state: Callable[[DeviceState], None] | None = None,
                 telemetry_filter: str | None = None) -> None:
        self.broker = broker
        self.registry = registry
        self.store = store
        self.tuf = tuf
        self.ingestor = ingestor
        self.chunk_size = chunk_size
        self.rebroadcast_window_s = rebroadcast_window_s
        self._on_event = on_event
        self._on_state_applied = on_state
        self.telemetry_filter = telemetry_filter or topics.device_wildcard("telemetry")
        self._recent: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()
        self.egress_bytes = 0
        self.rejected: Counter[str] = Counter()
        self._unsubscribes: list[Unsubscribe] = []
        self._known: set[str] = set()

    def start(self, *, telemetry_only: bool = False) -> None:
        """Subscribe to every device channel the hub consumes (telemetry through ``telemetry_filter``, which
        may be a ``$share/GROUP/...`` shared subscription splitting it among hub workers); a telemetry worker
        (``telemetry_only``) subscribes to telemetry alone."""
        handlers = {self.telemetry_filter: self._on_telemetry}
        if not telemetry_only:
            handlers |= {topics.device_wildcard("state"): self._on_state,
                         topics.device_wildcard("events"): self._on_update_event,
                         topics.device_wildcard("fetch"): self._on_fetch}
        for topic_filter, handler in handlers.items():
            self._unsubscribes.append(self.broker.subscribe(topic_filter, self._guard(handler)))

    def stop(self) -> None:
        """Unsubscribe everything."""
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        self._unsubscribes.clear()

    def send_deployment(self, device_id: str, order: DeploymentOrder) -> None:
        """Publish the desired deployment, retained, so a device that is offline gets it on reconnect."""
        self.broker.publish(topics.device_topic(device_id, "deployment"), encode(order), qos=1, retain=True)

    def order_for(self, deployment_id: str, bundle_sha256: str, *, model: str, version: str, target: str,
                  tuf_target: str, allow_downgrade: bool = False, shadow: bool = False) -> DeploymentOrder:
        """Build a deployment order for a stored bundle."""
        size = self.store.size(bundle_sha256)
        return DeploymentOrder(deployment_id=deployment_id, model=model, version=version, target=target,
                               tuf_target=tuf_target, sha256=bundle_sha256, size_bytes=size,
                               chunk_size=self.chunk_size, chunk_count=max(1, math.ceil(size / self.chunk_size)),
                               allow_downgrade=allow_downgrade, shadow=shadow, issued_at=time.time())

    # -- handlers -------------------------------------------------------------------------------------------

    def _guard(self, handler: Callable[[str, Message], None]) -> Callable[[Message], None]:
        def run(message: Message) -> None:
            try:
                device_id, _ = topics.parse_device_topic(message.topic)
                handler(device_id, message)
            except (ProtocolError, HubError) as exc:
                self.rejected[message.topic.rsplit("/", 1)[-1]] += 1
                log.warning("rejected message: %s", exc)

        return run

    def _on_state(self, device_id: str, message: Message) -> None:
        if not message.payload:
            return  # a cleared retained state
        state = decode(DeviceState, message.payload, topic=message.topic)
        if state.device_id != device_id:
            raise ProtocolError(f"state names device {state.device_id} but came on its own topic", topic=message.topic)
        if not self.registry.apply_device_state(state):
            raise ProtocolError(f"state from unprovisioned device {device_id}", topic=message.topic)
        if self._on_state_applied is not None:
            self._on_state_applied(state)

    def _on_update_event(self, device_id: str, message: Message) -> None:
        event = decode(UpdateEvent, message.payload, topic=message.topic)
        if event.device_id != device_id:
            raise ProtocolError("event names another device than its topic", topic=message.topic)
        self.registry.record_update_event(event)
        if self._on_event is not None:
            self._on_event(event)

    def _on_telemetry(self, device_id: str, message: Message) -> None:
        """Decode, check the sender, validate and queue; anything refused is counted by the ingestor."""
        try:
            batch = decode(TelemetryBatch, message.payload, topic=message.topic)
            if batch.device_id != device_id:
                raise ProtocolError("telemetry names another device than its topic", topic=message.topic)
            self._require_known(device_id, message.topic)
        except (ProtocolError, HubError):
            self.ingestor.reject()
            raise
        self.ingestor.submit(batch)  # validates: a malformed batch is counted there and raises ProtocolError

    def _on_fetch(self, device_id: str, message: Message) -> None:
        request = decode(FetchRequest, message.payload, topic=message.topic)
        self._require_known(device_id, message.topic)
        if request.kind == "metadata":
            self._reply_metadata(device_id, request)
        else:
            self._send_chunks(request)

    def _require_known(self, device_id: str, topic: str) -> None:
        """Serve and accept data only for provisioned devices (another hub may share the broker)."""
        if device_id in self._known:
            return
        self.registry.get_device(device_id)  # raises NotFoundError, counted as a rejected message
        self._known.add(device_id)

    def _reply_metadata(self, device_id: str, request: FetchRequest) -> None:
        name = request.name or ""
        try:
            data = self.tuf.metadata_file(name)
            reply = MetadataReply(request_id=request.request_id, name=name, found=True,
                                  data_b64=base64.b64encode(data).decode())
        except HubError:
            reply = MetadataReply(request_id=request.request_id, name=name, found=False)
        payload = encode(reply)
        self.egress_bytes += len(payload)
        self.broker.publish(topics.device_topic(device_id, "meta"), payload, qos=1)

    def _send_chunks(self, request: FetchRequest) -> None:
        if request.sha256 is None:
            raise ProtocolError("chunk request without sha256")
        size = self.store.size(request.sha256)
        count = max(1, math.ceil(size / self.chunk_size))
        now = time.monotonic()
        for index in sorted(set(request.chunks)):
            if index >= count:
                raise ProtocolError(f"chunk {index} out of range: bundle has {count} chunks")
            with self._lock:
                last = self._recent.get((request.sha256, index))
                if last is not None and now - last < self.rebroadcast_window_s:
                    continue
                self._recent[(request.sha256, index)] = now
            data = self.store.read_range(request.sha256, index * self.chunk_size, self.chunk_size)
            frame = encode_chunk(request.sha256, index, count, data)
            self.egress_bytes += len(frame)
            self.broker.publish(topics.bundle_topic(request.sha256), frame, qos=1)
        with self._lock:  # forget old entries so the map stays bounded
            if len(self._recent) > 100_000:
                cutoff = now - self.rebroadcast_window_s
                self._recent = {k: t for k, t in self._recent.items() if t >= cutoff}
