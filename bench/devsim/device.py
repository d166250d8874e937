"""`SimDevice`: the agent's side of the device protocol, without the agent's threads, disk, TUF or runtime.

What it sends and subscribes to follows `agent/daemon.py`, `agent/transfer.py` and `agent/telemetry.py`:

- on connect (clean session, last will = retained offline state): subscribe to its ``telemetry-ack``,
  ``deployment`` and ``meta`` topics, publish its retained state;
- on a deployment order: subscribe to the bundle's broadcast topic and its ``refused`` topic, report
  ``download`` (event and retained state), ask for every chunk at once (the agent's ``chunk_ask_after_s = 0``),
  ask again for missing ones after ``chunk_timeout_s`` without progress, check each chunk's and the bundle's
  sha256; an order with ``retained_chunks`` also subscribes to the bundle's retained chunks and asks only for
  what has not arrived within ``chunk_timeout_s`` (on a resumed session too); then ``verify`` with the TUF
  metadata the agent's ngclient asks for (the next root, timestamp, and the snapshot and targets versions they
  name), then ``install``, ``health_check``, ``commit`` and ``done``, each an event plus a retained state, as
  `agent.daemon.Agent._report` does;
- telemetry: `send_telemetry` publishes one batch (QoS 1), which stays outstanding until the hub's
  `TelemetryAck` names it and is sent again (same id) after ``ack_timeout_s``; heartbeats at QoS 0.

With ``verify=False`` it reports ``done`` right after the download (the rollout benchmark's lighter device).
What it does not do: verify TUF signatures, write files, run a model. Every callback runs on the fleet's event
loop thread; the fleet reads the counters from other threads only through its own condition.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import Protocol

from agent.transfer import metadata_waits
from bench.devsim import mqtt_codec as codec
from bench.devsim.session import MqttSession
from bench.devsim.telemetry import BatchTemplate
from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.messages import (
    DeploymentOrder,
    DeviceState,
    FetchRequest,
    Heartbeat,
    InstalledModel,
    MetadataReply,
    TelemetryAck,
    UpdateEvent,
    UpdateState,
    decode,
    decode_chunk,
    encode,
)

METADATA_ATTEMPTS = 4  # `agent.transfer.MetadataClient`: asks this many times within its timeout, then fails


class FleetHooks(Protocol):
    """What a device tells the fleet driving it."""

    def device_ready(self, device: SimDevice, first: bool) -> None: ...

    def device_lost(self, device: SimDevice, reason: str) -> None: ...

    def device_finished(self, device: SimDevice, ok: bool) -> None: ...

    def telemetry_acked(self, device: SimDevice, stored: int, rejected: int) -> None: ...

    def other_message(self, device: SimDevice, topic: str, payload: bytes) -> None: ...


class SimDevice:
    """One simulated device; `connect_packet` opens its session, `on_*` are the session's callbacks."""

    def __init__(
        self,
        device_id: str,
        target: str,
        installed: InstalledModel | None,
        hooks: FleetHooks,
        *,
        password: str = "devsim",
        subscribe_qos: int = 1,
        keepalive_s: int = 60,
        chunk_timeout_s: float = 5.0,
        metadata_timeout_s: float = 60.0,
        telemetry: BatchTemplate | None = None,
        telemetry_interval_s: float = 10.0,
        ack_timeout_s: float = 30.0,
        ask_after_s: float = 0.0,
        verify: bool = True,
    ) -> None:
        self.device_id = device_id
        self.target = target
        self.installed = installed
        self.hooks = hooks
        self.password = password
        self.qos = subscribe_qos
        self.keepalive_s = keepalive_s
        self.chunk_timeout_s = chunk_timeout_s
        self.ask_after_s = ask_after_s  # the agent's chunk_ask_after_s: 0 asks at once
        self.verify = verify  # False: done right after the download (no metadata, no install steps)
        self.metadata_waits = metadata_waits(metadata_timeout_s, METADATA_ATTEMPTS)  # the agent's MetadataClient
        self.telemetry = telemetry
        self.telemetry_interval_s = telemetry_interval_s
        self.session: MqttSession | None = None
        self.update_state = UpdateState.IDLE
        self.deployment_id: str | None = None
        self.order: DeploymentOrder | None = None
        self.chunks: dict[int, bytes] = {}
        self.last_progress = 0.0
        self.root_version = 1
        self.metadata_wanted: tuple[str, str] | None = None  # (request id, file name) awaiting a reply
        self.metadata_asked_at = 0.0
        self.metadata_missing = 0  # metadata files the hub answered ``found=False`` (other than the next root)
        self.metadata_requests = 0  # metadata requests sent, repeats included
        self.metadata_attempts = 0  # for the file asked for now
        # telemetry batch id -> (sent at, monotonic; payload), until acknowledged: sent again, same id, after
        # the agent's telemetry_ack_timeout_s
        self.outstanding: dict[str, tuple[float, bytes]] = {}
        self.ack_timeout_s = ack_timeout_s
        self.telemetry_resent = 0
        self.started = time.monotonic()
        # for the reports (wall-clock times, time.time()):
        self.ready_at: float | None = None
        self.order_at: float | None = None
        self.asked_at: float | None = None
        self.finished_at: float | None = None  # bundle complete
        self.verify_at: float | None = None  # metadata first asked for
        self.done_at: float | None = None  # done reported
        self.requests = 0  # chunk requests for the current order: more than one means it asked again
        self.frames = 0  # chunk frames received for the current order, duplicates included
        self.refused = 0
        self.ready = False
        self.reconnects = 0
        self.failure: str | None = None  # why the last update failed

    # -- session ------------------------------------------------------------------------------------------------

    def connect_packet(self) -> bytes:
        """CONNECT as the agent sends it: clean session, credentials, last will = retained offline state."""
        will = encode(DeviceState(device_id=self.device_id, online=False, target=self.target))
        return codec.encode_connect(
            self.device_id,
            keepalive_s=self.keepalive_s,
            username=self.device_id,
            password=self.password,
            will=(topics.device_topic(self.device_id, "state"), will, 1, True),
        )

    def on_connected(self, session: MqttSession) -> None:
        self.session = session
        channels = ("telemetry-ack", "deployment", "meta")
        session.subscribe([(topics.device_topic(self.device_id, c), self.qos) for c in channels])
        self._announce()
        if self.downloading() and self.order is not None:  # a new session after a lost one: resume the download
            session.subscribe([(f, self.qos) for f in self._download_filters(self.order)])
            if self.order.retained_chunks:  # the broker sends the retained chunks again; `tick` asks after them
                self.last_progress = time.monotonic()
            else:
                self.request_missing()

    def on_subscribed(self) -> None:
        first = not self.ready
        if first:
            self.ready, self.ready_at = True, time.time()
        self.hooks.device_ready(self, first)

    def on_lost(self, reason: str) -> None:
        self.hooks.device_lost(self, reason)

    def on_message(self, topic: str, payload: bytes) -> None:
        channel = topic.rsplit("/", 1)[1]
        try:
            if topic.startswith(f"{topics.ROOT}/bundles/"):  # broadcast and retained chunks
                if payload:  # empty: the hub clearing a retained chunk
                    self._on_chunk(payload)
            elif channel == "deployment":
                if payload:
                    self._start(decode(DeploymentOrder, payload, topic=topic))
            elif channel == "meta":
                self._on_metadata(decode(MetadataReply, payload, topic=topic))
            elif channel == "telemetry-ack":
                ack = decode(TelemetryAck, payload, topic=topic)  # a batch sent twice may be acknowledged twice
                stored = sum(1 for b in ack.stored if self.outstanding.pop(b, None) is not None)
                rejected = sum(1 for b in ack.rejected if self.outstanding.pop(b, None) is not None)
                self.hooks.telemetry_acked(self, stored, rejected)
            elif channel == "refused":
                self.refused += 1
            else:
                self.hooks.other_message(self, topic, payload)
        except ProtocolError as exc:
            self.hooks.device_lost(self, f"{self.device_id}: {exc}")

    # -- what the device sends ----------------------------------------------------------------------------------

    def _publish(self, channel: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if self.session is not None:
            self.session.publish(topics.device_topic(self.device_id, channel), payload, qos=qos, retain=retain)

    def _announce(self) -> None:
        state = DeviceState(
            device_id=self.device_id,
            online=True,
            target=self.target,
            agent_version="devsim",
            active=self.installed,
            update_state=self.update_state,
            deployment_id=self.deployment_id,
            ts=time.time(),
        )
        self._publish("state", encode(state), retain=True)

    def _report(self, state: UpdateState, ok: bool = True, detail: str = "") -> None:
        """An update event, and the retained state when it changed (`agent.daemon.Agent._report`)."""
        assert self.order is not None
        event = UpdateEvent(
            device_id=self.device_id,
            deployment_id=self.order.deployment_id,
            state=state,
            ok=ok,
            detail=detail,
            ts=time.time(),
        )
        self._publish("events", encode(event))
        if state != self.update_state or self.deployment_id != self.order.deployment_id:
            self.update_state, self.deployment_id = state, self.order.deployment_id
            self._announce()

    def heartbeat(self) -> None:
        """A heartbeat (QoS 0)."""
        beat = Heartbeat(
            device_id=self.device_id, ts=time.time(), uptime_s=time.monotonic() - self.started, requests_total=0
        )
        self._publish("heartbeat", encode(beat), qos=0)

    def send_telemetry(self) -> None:
        """Publish one telemetry batch of the installed version; it stays outstanding until acknowledged."""
        if self.telemetry is None or self.session is None:
            return
        batch_id, payload = self.telemetry.render(self.device_id, self.telemetry_interval_s)
        self.outstanding[batch_id] = (time.monotonic(), payload)
        self._publish("telemetry", payload)

    # -- the update ---------------------------------------------------------------------------------------------

    def _start(self, order: DeploymentOrder) -> None:
        if self.installed is not None and order.sha256 == self.installed.sha256:
            return  # already running it (the retained order of an earlier run)
        if self.order is not None and self.order.deployment_id == order.deployment_id:
            return  # the same order again
        assert self.session is not None
        self.order, self.chunks, self.last_progress, self.failure = order, {}, time.monotonic(), None
        self.order_at, self.asked_at, self.finished_at, self.done_at = time.time(), None, None, None
        self.requests, self.frames = 0, 0
        self.session.subscribe([(f, self.qos) for f in self._download_filters(order)])
        self._report(UpdateState.DOWNLOAD)
        if self.ask_after_s == 0 and not order.retained_chunks:  # else `tick` asks when `_ask_due`
            self.request_missing()

    def _download_filters(self, order: DeploymentOrder) -> list[str]:
        """What a download listens on: the broadcast chunks, refusals, and the retained chunks if kept."""
        filters = [topics.bundle_topic(order.sha256), topics.device_topic(self.device_id, "refused")]
        if order.retained_chunks:
            filters.append(topics.retained_chunks_filter(order.sha256))
        return filters

    def _ask_due(self, now: float) -> bool:
        """Whether the download has waited long enough without a chunk to ask (again), as `ChunkDownloader`: the
        first request waits ``ask_after_s``, or ``chunk_timeout_s`` for retained chunks; later ones
        ``chunk_timeout_s``."""
        order = self.order
        if order is None or self.finished_at is not None:
            return False
        first_s = self.chunk_timeout_s if order.retained_chunks else self.ask_after_s
        return now - self.last_progress > (self.chunk_timeout_s if self.requests else first_s)

    def downloading(self) -> bool:
        return self.order is not None and self.finished_at is None

    def request_missing(self) -> None:
        """Ask the hub for the chunks not received yet."""
        order = self.order
        if order is None or self.finished_at is not None:
            return
        self.requests += 1
        self.last_progress = time.monotonic()
        self.asked_at = time.time()
        missing = [i for i in range(order.chunk_count) if i not in self.chunks]
        request = FetchRequest(request_id=uuid.uuid4().hex[:12], kind="chunks", sha256=order.sha256, chunks=missing)
        self._publish("fetch", encode(request))

    def _on_chunk(self, payload: bytes) -> None:
        frame = decode_chunk(payload)
        order = self.order
        if order is None or frame.sha256 != order.sha256 or self.finished_at is not None:
            return
        self.frames += 1
        self.chunks[frame.index] = frame.data
        self.last_progress = time.monotonic()
        if len(self.chunks) < order.chunk_count:
            return
        self.finished_at = time.time()
        assert self.session is not None
        self.session.unsubscribe(self._download_filters(order))
        data = b"".join(self.chunks[i] for i in range(order.chunk_count))
        self.chunks = {}
        if hashlib.sha256(data).hexdigest() != order.sha256:
            self._fail("bundle digest mismatch")
            return
        if not self.verify:
            self._install(before=(), after=())
            return
        self._report(UpdateState.VERIFY)
        self.verify_at = time.time()
        self._ask_metadata(f"{self.root_version + 1}.root.json")

    def _ask_metadata(self, name: str) -> None:
        self.metadata_wanted = (uuid.uuid4().hex, name)
        self.metadata_attempts = 0
        self._send_metadata_request()

    def _send_metadata_request(self) -> None:
        assert self.metadata_wanted is not None
        request_id, name = self.metadata_wanted
        self.metadata_asked_at = time.monotonic()
        self.metadata_requests += 1
        self.metadata_attempts += 1
        self._publish("fetch", encode(FetchRequest(request_id=request_id, kind="metadata", name=name)))

    def _on_metadata(self, reply: MetadataReply) -> None:
        if self.metadata_wanted is None or reply.request_id != self.metadata_wanted[0]:
            return
        name = self.metadata_wanted[1]
        self.metadata_wanted = None
        signed = json.loads(base64.b64decode(reply.data_b64))["signed"] if reply.found else None
        if name.endswith(".root.json"):
            if signed is not None:  # a newer root: take it and look for the next one (ngclient's loop)
                self.root_version = int(signed["version"])
                self._ask_metadata(f"{self.root_version + 1}.root.json")
            else:
                self._ask_metadata("timestamp.json")
        elif signed is None:
            self.metadata_missing += 1
            self._installed()
        elif name == "timestamp.json":
            self._ask_metadata(f"{signed['meta']['snapshot.json']['version']}.snapshot.json")
        elif name.endswith(".snapshot.json"):
            self._ask_metadata(f"{signed['meta']['targets.json']['version']}.targets.json")
        else:
            self._installed()

    def _installed(self) -> None:
        self._install(before=(UpdateState.INSTALL, UpdateState.HEALTH_CHECK), after=(UpdateState.COMMIT,))

    def _install(self, *, before: tuple[UpdateState, ...], after: tuple[UpdateState, ...]) -> None:
        """Report ``before``, switch to the order's version, report ``after`` and done (the retained states from
        the switch on name the new version as active)."""
        order = self.order
        assert order is not None
        for state in before:
            self._report(state)
        self.installed = InstalledModel(
            model=order.model, version=order.version, sha256=order.sha256, target=order.target
        )
        for state in (*after, UpdateState.DONE):
            self._report(state)
        self.done_at = time.time()
        self.hooks.device_finished(self, True)

    def _fail(self, detail: str) -> None:
        self.failure = detail
        self._report(UpdateState.FAILED, ok=False, detail=detail)
        self.done_at = time.time()
        self.hooks.device_finished(self, False)

    def tick(self, now: float) -> None:
        """Timers (called every fraction of a second): ask again for chunks or metadata the hub did not send."""
        if self._ask_due(now):
            self.request_missing()
        for batch_id, (sent_at, payload) in list(self.outstanding.items()):
            if now - sent_at > self.ack_timeout_s:  # the hub never stored it, or its acknowledgement was lost
                self.outstanding[batch_id] = (now, payload)
                self.telemetry_resent += 1
                self._publish("telemetry", payload)
        waited = self.metadata_waits[max(0, self.metadata_attempts - 1)]
        if self.metadata_wanted is not None and now - self.metadata_asked_at > waited:
            if self.metadata_attempts < METADATA_ATTEMPTS:
                self._send_metadata_request()
            else:  # the agent's verify fails: "hub did not answer the request for TUF metadata ..."
                name = self.metadata_wanted[1]
                self.metadata_wanted = None
                self._fail(f"hub did not answer the request for TUF metadata {name}")
