"""`BundleTransfer`: answers devices' fetch requests with TUF metadata and bundle chunks over the broker.

Bundle chunks go to one broadcast topic per bundle. The first request for a chunk schedules its broadcast
``gather_s`` later, so the devices of a wave, which subscribe as their orders arrive, are all listening when it
goes out and the requests that arrive meanwhile ride along; a chunk sent within ``rebroadcast_window_s`` is not
sent again. A wave of devices fetching together thus costs about one bundle of egress, and a device that
missed chunks (it joined after the broadcast) asks again for just those once its stream goes quiet.

A chunk request the hub cannot serve (no such bundle in the store, a chunk index past its end) is answered at
once with `FetchRefused` on the device's ``refused`` topic, so the device fails its update with the hub's
reason instead of waiting for its download timeout.

Delta updates: the metadata name ``chunk-index.{sha256}`` returns the bundle's content-defined chunk index
(`fleet.wire.chunk_index`, computed once per bundle and cached), and a ``pieces`` request broadcasts the named
pieces on the bundle's ``pieces`` topic under the same gather delay and rebroadcast window, so a device that
holds the previous version fetches only the pieces it lacks. An index too large for one reply is answered as
not found, and the device downloads the whole bundle.
"""

from __future__ import annotations

import base64
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.chunk_index import DELTA_MIN_SHARED, MAX_PIECES, ChunkIndex, parse_index_name
from fleet.wire.messages import FetchRefused, FetchRequest, MetadataReply, encode, encode_chunk
from fleet.wire.transport import Broker
from hub.bundles.chunking import chunk_index
from hub.bundles.store import ArtifactStore
from hub.bundles.tuf_repository import TufRepository
from hub.errors import HubError, NotFoundError

__all__ = ["BundleTransfer"]

_MAX_RECENT = 100_000
_INDEXES_CACHED = 32

_Key = tuple[str, str, int]  # bundle digest, "chunk" or "piece", position
_Frame = Callable[[], tuple[str, bytes]]  # reads the data when sent: (topic, frame)


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
    ) -> None:
        self.broker = broker
        self.store = store
        self.tuf = tuf
        self.chunk_size = chunk_size
        self.rebroadcast_window_s = rebroadcast_window_s
        self.gather_s = gather_s
        self.egress_bytes = 0
        self.broadcasts = 0
        self._recent: dict[_Key, float] = {}
        self._pending: dict[_Key, _Frame] = {}
        self._timer: threading.Timer | None = None
        self._closed = False
        self._indexes: OrderedDict[str, ChunkIndex | None] = OrderedDict()
        self._lock = threading.Lock()

    def handle(self, device_id: str, request: FetchRequest) -> None:
        """Answer one fetch request (a `DeviceTraffic` fetch listener)."""
        if request.kind == "metadata":
            self._reply_metadata(device_id, request)
        elif request.kind == "pieces":
            self._send_pieces(device_id, request)
        else:
            self._send_chunks(device_id, request)

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
        self.egress_bytes += len(payload)
        self.broker.publish(topics.device_topic(device_id, "meta"), payload, qos=1)

    def _send_chunks(self, device_id: str, request: FetchRequest) -> None:
        if request.sha256 is None:
            raise ProtocolError("chunk request without sha256")
        try:
            size = self.store.size(request.sha256)
        except NotFoundError:
            self._refuse(device_id, request, request.sha256, f"the hub has no bundle {request.sha256}")
            return
        count = max(1, math.ceil(size / self.chunk_size))
        wanted = sorted(set(request.chunks))
        if wanted and wanted[-1] >= count:
            self._refuse(
                device_id, request, request.sha256, f"chunk {wanted[-1]} out of range: bundle has {count} chunks"
            )
            return
        self._schedule(self._chunk_frames(request.sha256, wanted, count))

    def push(self, sha256: str, installed: set[str] | None = None) -> None:
        """Broadcast every chunk of ``sha256`` after the gather delay, even chunks sent within the window: a
        wave was just ordered to fetch it, and its devices were not listening before (`RolloutManager.push`).

        Nothing is pushed when a bundle the wave's devices have ``installed`` shares a quarter or more of its
        bytes with ``sha256``: those devices fetch only the pieces they lack, and a push would send it all.
        """
        try:
            count = max(1, math.ceil(self.store.size(sha256) / self.chunk_size))
            if any(self._shared_share(sha256, base) >= DELTA_MIN_SHARED for base in installed or set()):
                return
        except NotFoundError:
            return  # the devices' requests are refused with the reason
        self._schedule(self._chunk_frames(sha256, list(range(count)), count), resend=True)

    def _shared_share(self, sha256: str, base: str) -> float:
        """The share of ``sha256``'s bytes found in pieces of ``base`` (0 when either has no index)."""
        if base == sha256:
            return 0.0
        new, old = self.chunk_index(sha256), self.chunk_index(base)
        if new is None or old is None or new.size == 0:
            return 0.0
        have = old.by_digest()
        return sum(p.length for p in new.pieces if p.sha256 in have) / new.size

    def _chunk_frames(self, sha256: str, indices: list[int], count: int) -> dict[_Key, _Frame]:
        topic = topics.bundle_topic(sha256)

        def chunk(index: int) -> _Frame:
            offset = index * self.chunk_size
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

        self._schedule({(sha, "piece", position): piece(position) for position in wanted})

    def close(self) -> None:
        """Send what is gathered now and schedule nothing more (the hub is stopping)."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._flush()

    def _schedule(self, frames: dict[_Key, _Frame], *, resend: bool = False) -> None:
        """Queue the frames not already queued and (unless ``resend``) not sent within the rebroadcast window;
        send them after ``gather_s`` (at once when it is 0)."""
        now = time.monotonic()
        with self._lock:
            for key, frame in frames.items():
                last = self._recent.get(key)
                if key not in self._pending and (resend or last is None or now - last >= self.rebroadcast_window_s):
                    self._pending[key] = frame
            if len(self._recent) > _MAX_RECENT:  # forget old entries so the map stays bounded
                cutoff = now - self.rebroadcast_window_s
                self._recent = {k: t for k, t in self._recent.items() if t >= cutoff}
            gather = self.gather_s > 0 and not self._closed
            if gather and self._pending and self._timer is None:
                self._timer = threading.Timer(self.gather_s, self._flush)
                self._timer.daemon = True
                self._timer.start()
        if not gather:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending, self._timer = self._pending, {}, None
        for key in sorted(batch):
            topic, frame = batch[key]()
            with self._lock:
                self._recent[key] = time.monotonic()
            self.egress_bytes += len(frame)
            self.broadcasts += 1
            self.broker.publish(topic, frame, qos=1)

    def _refuse(self, device_id: str, request: FetchRequest, sha256: str, reason: str) -> None:
        payload = encode(FetchRefused(request_id=request.request_id, sha256=sha256, reason=reason))
        self.egress_bytes += len(payload)
        self.broker.publish(topics.device_topic(device_id, "refused"), payload, qos=1)
