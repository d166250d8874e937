"""`BundleTransfer`: answers devices' fetch requests with TUF metadata and bundle chunks over the broker.

Bundle chunks go to one broadcast topic per bundle, so devices fetching together share one stream. A device
subscribes, then asks on its ``fetch`` topic for the chunks it lacks; requests are gathered, not answered one
by one:

- A wave (`push`: a rollout wave or `Hub.deploy` names the online devices it is about to order) is broadcast
  once every device of the wave has asked, and at the latest ``wave_wait_s`` after the push (a device that
  never asks). Each device's request arrives after its subscription (one connection keeps its order), so the
  whole wave is listening: it costs one bundle of egress. A wave of which no device asks sends nothing.
- Any other request is broadcast ``gather_s`` after it arrived, and the requests arriving meanwhile ride along.
- Repair window: a chunk is broadcast at most once per ``rebroadcast_window_s``. A late joiner's request for
  a chunk sent within the window is kept and served when the window ends, together with every other late
  joiner's, so late joiners cost at most one more chunk per window, never a bundle per device.

Broadcasts go out on one sender thread, paced by the broker's flow control: with a broker that acknowledges
(`PahoBroker.publish_and_wait`), the sender waits for the broker to take every ``flow_window`` chunks before
publishing more, so a large bundle never piles up in the client's queue. With ``gather_s`` 0, requests are
answered on the calling thread (tests, `bench/bench_delta.py`).

Hub replicas: every replica answers metadata requests (`handle_metadata`), but only the leader broadcasts
chunks and pieces (`handle_chunks`, wired by `hub.cluster.duties.LeaderDuties` to the leader's own unshared
subscription), so egress does not grow with the number of replicas.

A chunk request the hub cannot serve (no such bundle in the store, a chunk index past its end) is answered at
once with `FetchRefused` on the device's ``refused`` topic, so the device fails its update with the hub's
reason instead of waiting for its download timeout.

Delta updates: the metadata name ``chunk-index.{sha256}`` returns the bundle's content-defined chunk index
(`fleet.wire.chunk_index`, computed once per bundle and cached), and a ``pieces`` request broadcasts the named
pieces on the bundle's ``pieces`` topic, gathered the same way, so a device that holds the previous version
fetches only the pieces it lacks. An index too large for one reply is answered as not found, and the device
downloads the whole bundle.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.chunk_index import MAX_PIECES, ChunkIndex, parse_index_name
from fleet.wire.messages import FetchRefused, FetchRequest, MetadataReply, encode, encode_chunk
from fleet.wire.transport import Broker
from hub.bundles.chunking import chunk_index
from hub.bundles.store import ArtifactStore
from hub.bundles.tuf_repository import TufRepository
from hub.errors import HubError, NotFoundError

__all__ = ["BundleTransfer"]

log = logging.getLogger(__name__)

_MAX_RECENT = 100_000
_INDEXES_CACHED = 32

_Key = tuple[str, str, int]  # bundle digest, "chunk" or "piece", position
_Frame = Callable[[], tuple[str, bytes]]  # reads the data when sent: (topic, frame)


@runtime_checkable
class _Acknowledging(Protocol):
    """A broker that can wait for its broker's acknowledgement (`fleet.wire.mqtt.PahoBroker`)."""

    def publish_and_wait(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout_s: float = 10.0
    ) -> bool: ...


@dataclass
class _Wave:
    """Devices just ordered to fetch one bundle: its broadcast waits for their requests."""

    waiting: set[str]
    latest: float  # broadcast by then at the latest (when anyone asked)
    asked: set[str] = field(default_factory=set)
    keys: set[_Key] = field(default_factory=set)


class BundleTransfer:
    """Serves metadata files and bundle chunks; counts the bytes it sends in ``egress_bytes``."""

    def __init__(
        self,
        broker: Broker,
        store: ArtifactStore,
        tuf: TufRepository,
        *,
        chunk_size: int = 64 * 1024,
        rebroadcast_window_s: float = 2.0,
        gather_s: float = 0.0,
        wave_wait_s: float = 3.0,
        flow_window: int = 16,
        retained_max_chunks: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker
        self.store = store
        self.tuf = tuf
        self.chunk_size = chunk_size
        self.rebroadcast_window_s = rebroadcast_window_s
        self.gather_s = gather_s
        self.wave_wait_s = wave_wait_s
        self.flow_window = max(1, flow_window)
        self.retained_max_chunks = retained_max_chunks
        self.clock = clock
        self.egress_bytes = 0
        self.broadcasts = 0
        self._recent: dict[_Key, float] = {}
        self._pending: dict[_Key, _Frame] = {}
        self._due: dict[_Key, float] = {}
        self._waves: dict[str, _Wave] = {}
        self._sender: threading.Thread | None = None
        self._closed = False
        self._indexes: OrderedDict[str, ChunkIndex | None] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._send_lock = threading.Lock()  # one broadcast at a time, in key order

    # -- requests ----------------------------------------------------------------------------------------------

    def handle(self, device_id: str, request: FetchRequest) -> None:
        """Answer one fetch request of any kind (a `DeviceTraffic` fetch listener of a lone hub)."""
        if request.kind == "metadata":
            self.handle_metadata(device_id, request)
        else:
            self.handle_chunks(device_id, request)

    def handle_metadata(self, device_id: str, request: FetchRequest) -> None:
        """Answer a metadata request; ignore chunk and piece requests (what every hub replica does)."""
        if request.kind == "metadata":
            self._reply_metadata(device_id, request)

    def handle_chunks(self, device_id: str, request: FetchRequest) -> None:
        """Gather a chunk or piece request for broadcast; ignore metadata requests (the leader's part)."""
        if request.kind == "pieces":
            self._send_pieces(device_id, request)
        elif request.kind == "chunks":
            self._send_chunks(device_id, request)

    def push(self, sha256: str, device_ids: Iterable[str]) -> None:
        """``device_ids`` are about to be ordered to fetch ``sha256``: broadcast it once they have all asked
        (`RolloutManager` calls this for each wave before sending its orders)."""
        devices = set(device_ids)
        if not devices:
            return
        now = self.clock()
        with self._lock:
            wave = self._waves.get(sha256)
            if wave is None:
                self._waves[sha256] = _Wave(waiting=devices, latest=now + self.wave_wait_s)
            else:
                wave.waiting |= devices
                wave.latest = now + self.wave_wait_s
                self._time_wave(wave, now)
            self._forget_idle_waves(now)

    # -- retained chunks ---------------------------------------------------------------------------------------

    def retainable(self, sha256: str) -> int:
        """The chunk count of ``sha256`` when the broker may keep it retained (at most ``retained_max_chunks``),
        else 0."""
        count = self._chunk_count(sha256)
        return count if count <= self.retained_max_chunks else 0

    def retain(self, sha256: str) -> None:
        """Publish every chunk of ``sha256`` retained on its `topics.retained_chunk_topic`, paced by the broker:
        a device that subscribes to `topics.retained_chunks_filter` is then sent the whole bundle by the broker."""
        count = self._chunk_count(sha256)
        frames = self._chunk_frames(sha256, list(range(count)), count, retained=True)
        with self._send_lock:
            self._publish_frames(sorted(frames.items()), retain=True)

    def clear_retained(self, sha256: str, chunk_count: int) -> None:
        """Clear the ``chunk_count`` retained chunks of ``sha256`` (an empty retained message per chunk topic;
        the bundle need not be in the store any more)."""
        with self._send_lock:
            for index in range(chunk_count):
                self.broker.publish(topics.retained_chunk_topic(sha256, index), b"", qos=1, retain=True)

    def _chunk_count(self, sha256: str) -> int:
        return max(1, math.ceil(self._size(sha256) / self.chunk_size))

    # -- metadata ----------------------------------------------------------------------------------------------

    def chunk_index(self, sha256: str) -> ChunkIndex | None:
        """The chunk index of a stored bundle (cached), or None when it is too large to serve."""
        with self._lock:
            if sha256 in self._indexes:
                self._indexes.move_to_end(sha256)
                return self._indexes[sha256]
        index: ChunkIndex | None = chunk_index(self.store.read(sha256))
        if index is not None and len(index.pieces) > MAX_PIECES:
            index = None  # too large for one reply: devices download the whole bundle
        with self._lock:
            self._indexes[sha256] = index
            while len(self._indexes) > _INDEXES_CACHED:
                self._indexes.popitem(last=False)
        return index

    def _metadata_bytes(self, name: str) -> bytes:
        indexed = parse_index_name(name)
        if indexed is None:
            return self.tuf.metadata_file(name)
        index = self.chunk_index(indexed)
        if index is None:
            raise NotFoundError(f"bundle {indexed[:12]} has too many pieces for a chunk index")
        return index.encode()

    def _reply_metadata(self, device_id: str, request: FetchRequest) -> None:
        name = request.name or ""
        try:
            data = self._metadata_bytes(name)
            reply = MetadataReply(
                request_id=request.request_id, name=name, found=True, data_b64=base64.b64encode(data).decode()
            )
        except HubError:
            reply = MetadataReply(request_id=request.request_id, name=name, found=False)
        payload = encode(reply)
        self._count(len(payload), broadcast=False)
        self.broker.publish(topics.device_topic(device_id, "meta"), payload, qos=1)

    # -- chunks and pieces ---------------------------------------------------------------------------------

    def _send_chunks(self, device_id: str, request: FetchRequest) -> None:
        if request.sha256 is None:
            raise ProtocolError("chunk request without sha256")
        try:
            count = self._chunk_count(request.sha256)
        except NotFoundError:
            self._refuse(device_id, request, request.sha256, f"the hub has no bundle {request.sha256}")
            return
        wanted = sorted(set(request.chunks))
        if wanted and wanted[-1] >= count:
            self._refuse(
                device_id, request, request.sha256, f"chunk {wanted[-1]} out of range: bundle has {count} chunks"
            )
            return
        self._schedule(device_id, request.sha256, self._chunk_frames(request.sha256, wanted, count))

    def _size(self, sha256: str) -> int:
        """A stored bundle's size, remembered: content-addressed, it never changes (a wave asks a thousand times)."""
        with self._lock:
            size = self._sizes.get(sha256)
        if size is None:
            size = self.store.size(sha256)
            with self._lock:
                if len(self._sizes) >= _INDEXES_CACHED * 32:
                    self._sizes.clear()
                self._sizes[sha256] = size
        return size

    def _chunk_frames(
        self, sha256: str, indices: list[int], count: int, *, retained: bool = False
    ) -> dict[_Key, _Frame]:
        broadcast = topics.bundle_topic(sha256)

        def chunk(index: int) -> _Frame:
            offset = index * self.chunk_size
            topic = topics.retained_chunk_topic(sha256, index) if retained else broadcast
            return lambda: (
                topic,
                encode_chunk(sha256, index, count, self.store.read_range(sha256, offset, self.chunk_size)),
            )

        return {(sha256, "chunk", index): chunk(index) for index in indices}

    def _send_pieces(self, device_id: str, request: FetchRequest) -> None:
        if request.sha256 is None:
            raise ProtocolError("pieces request without sha256")
        try:
            index = self.chunk_index(request.sha256)
        except NotFoundError:
            self._refuse(device_id, request, request.sha256, f"the hub has no bundle {request.sha256}")
            return
        wanted = sorted(set(request.chunks))
        if index is None or (wanted and wanted[-1] >= len(index.pieces)):
            self._refuse(device_id, request, request.sha256, f"pieces {wanted[-1:]} out of range for the index")
            return
        sha, topic, pieces = request.sha256, topics.bundle_pieces_topic(request.sha256), index.pieces

        def piece(position: int) -> _Frame:
            at = pieces[position]
            return lambda: (
                topic,
                encode_chunk(sha, position, len(pieces), self.store.read_range(sha, at.offset, at.length)),
            )

        self._schedule(device_id, sha, {(sha, "piece", position): piece(position) for position in wanted})

    def _refuse(self, device_id: str, request: FetchRequest, sha256: str, reason: str) -> None:
        payload = encode(FetchRefused(request_id=request.request_id, sha256=sha256, reason=reason))
        self._count(len(payload), broadcast=False)
        self.broker.publish(topics.device_topic(device_id, "refused"), payload, qos=1)

    # -- gathering -------------------------------------------------------------------------------------------

    def _schedule(self, device_id: str, sha256: str, frames: dict[_Key, _Frame]) -> None:
        """Queue the frames a device asked for: with its wave's broadcast when it belongs to one, else
        ``gather_s`` from now, and never within the repair window of the frame's last broadcast."""
        now = self.clock()
        with self._lock:
            wave = self._waves.get(sha256)
            if wave is not None and device_id not in wave.waiting and device_id not in wave.asked:
                wave = None  # not one of the wave's devices: it rides along only where the keys meet
            for key, frame in frames.items():
                if wave is not None:
                    wave.keys.add(key)
                if key in self._pending:
                    continue
                self._pending[key] = frame
                last = self._recent.get(key)
                repair = last + self.rebroadcast_window_s if last is not None and wave is None else now
                self._due[key] = max(now + self.gather_s, repair)
            if wave is not None:
                wave.waiting.discard(device_id)
                wave.asked.add(device_id)
                self._time_wave(wave, now)
            if len(self._recent) > _MAX_RECENT:  # forget old entries so the map stays bounded
                cutoff = now - self.rebroadcast_window_s
                self._recent = {k: t for k, t in self._recent.items() if t >= cutoff}
            self._changed.notify_all()
        if self.gather_s <= 0:
            self._flush(due_by=now)
        else:
            self._ensure_sender()

    def _time_wave(self, wave: _Wave, now: float) -> None:
        """Set the due time of a wave's frames: now once every device asked, else the wave's latest time (no
        quiet-time guess: on a loaded hub the requests of a wave can pause longer than any gather delay)."""
        if not wave.asked:
            return
        due = now if not wave.waiting else wave.latest
        for key in wave.keys:
            if key in self._pending:
                self._due[key] = due

    def _forget_idle_waves(self, now: float) -> None:
        for sha, wave in list(self._waves.items()):
            if not wave.asked and now >= wave.latest:
                del self._waves[sha]  # none of its devices asked (offline, or fetching pieces elsewhere)

    # -- sending ---------------------------------------------------------------------------------------------

    def _ensure_sender(self) -> None:
        with self._lock:
            if self._sender is not None or self._closed:
                return
            self._sender = threading.Thread(target=self._run, name="edgefleet-chunk-sender", daemon=True)
            self._sender.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = self.clock()
                next_due = min(self._due.values(), default=None)
                if next_due is None or next_due > now:
                    self._changed.wait(None if next_due is None else next_due - now)
                    continue
            self._flush(due_by=now)

    def _flush(self, *, due_by: float | None, paced: bool = True) -> None:
        """Broadcast the frames due by ``due_by`` (all when None), in key order, paced by the broker."""
        with self._send_lock:
            with self._lock:
                keys = sorted(k for k, t in self._due.items() if due_by is None or t <= due_by)
                batch = [(key, self._pending.pop(key)) for key in keys]
                for key in keys:
                    del self._due[key]
                for sha in {key[0] for key in keys}:
                    wave = self._waves.get(sha)
                    if wave is not None and wave.asked and not (wave.keys & self._pending.keys()):
                        del self._waves[sha]  # sent: whoever asks now is a late joiner
            self._publish_frames(batch, paced=paced)

    def _publish_frames(self, batch: list[tuple[_Key, _Frame]], *, paced: bool = True, retain: bool = False) -> None:
        """Publish frames in order, waiting for the broker every ``flow_window`` (the caller holds the send lock);
        broadcasts open their chunks' repair window, retained chunks open none."""
        acknowledging = paced and isinstance(self.broker, _Acknowledging)
        for position, (key, read) in enumerate(batch, start=1):
            topic, frame = read()
            if not retain:
                with self._lock:
                    self._recent[key] = self.clock()
            self._count(len(frame), broadcast=True)
            if acknowledging and (position % self.flow_window == 0 or position == len(batch)):
                assert isinstance(self.broker, _Acknowledging)
                if not self.broker.publish_and_wait(topic, frame, qos=1, retain=retain, timeout_s=30.0):
                    log.warning("broker did not take chunk %d of %s in time", key[2], key[0][:12])
            else:
                self.broker.publish(topic, frame, qos=1, retain=retain)

    def _count(self, size: int, *, broadcast: bool) -> None:
        with self._lock:
            self.egress_bytes += size
            self.broadcasts += broadcast

    def close(self) -> None:
        """Send what is gathered now (repairs included) and schedule nothing more (the hub is stopping)."""
        with self._lock:
            self._closed = True
            sender, self._sender = self._sender, None
            self._changed.notify_all()
        if sender is not None:
            sender.join(timeout=30)
        self._flush(due_by=None, paced=False)  # stopping: hand it all to the client at once
