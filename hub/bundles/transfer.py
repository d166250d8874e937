"""`BundleTransfer`: answers devices' fetch requests with TUF metadata and bundle chunks over the broker.

Bundle chunks go to one broadcast topic per bundle; a chunk already sent within ``rebroadcast_window_s`` is
not sent again, so a wave of devices fetching together costs about one bundle of egress, and a device that
missed chunks asks for just those. A chunk request the hub cannot serve (no such bundle in the store, a chunk
index past its end) is answered at once with `FetchRefused` on the device's ``refused`` topic, so the device
fails its update with the hub's reason instead of waiting for its download timeout.

Delta updates: the metadata name ``chunk-index.{sha256}`` returns the bundle's content-defined chunk index
(`fleet.wire.chunk_index`, computed once per bundle and cached), and a ``pieces`` request broadcasts the named
pieces on the bundle's ``pieces`` topic under the same rebroadcast window, so a device that holds the previous
version fetches only the pieces it lacks. An index too large for one reply is answered as not found, and the
device downloads the whole bundle.
"""

from __future__ import annotations

import base64
import math
import threading
import time
from collections import OrderedDict

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

_MAX_RECENT = 100_000
_INDEXES_CACHED = 32


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
    ) -> None:
        self.broker = broker
        self.store = store
        self.tuf = tuf
        self.chunk_size = chunk_size
        self.rebroadcast_window_s = rebroadcast_window_s
        self.egress_bytes = 0
        self._recent: dict[tuple[str, str, int], float] = {}
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
        topic = topics.bundle_topic(request.sha256)
        for index in self._due(request.sha256, "chunk", wanted):
            data = self.store.read_range(request.sha256, index * self.chunk_size, self.chunk_size)
            self._broadcast(topic, encode_chunk(request.sha256, index, count, data))

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
        topic = topics.bundle_pieces_topic(request.sha256)
        count = len(index.pieces)
        for position in self._due(request.sha256, "piece", wanted):
            piece = index.pieces[position]
            data = self.store.read_range(request.sha256, piece.offset, piece.length)
            self._broadcast(topic, encode_chunk(request.sha256, position, count, data))

    def _due(self, sha256: str, kind: str, wanted: list[int]) -> list[int]:
        """The requested positions not broadcast within the rebroadcast window; marks them as sent now."""
        now = time.monotonic()
        due = []
        with self._lock:
            for position in wanted:
                last = self._recent.get((sha256, kind, position))
                if last is None or now - last >= self.rebroadcast_window_s:
                    self._recent[(sha256, kind, position)] = now
                    due.append(position)
            if len(self._recent) > _MAX_RECENT:  # forget old entries so the map stays bounded
                cutoff = now - self.rebroadcast_window_s
                self._recent = {k: t for k, t in self._recent.items() if t >= cutoff}
        return due

    def _broadcast(self, topic: str, frame: bytes) -> None:
        self.egress_bytes += len(frame)
        self.broker.publish(topic, frame, qos=1)

    def _refuse(self, device_id: str, request: FetchRequest, sha256: str, reason: str) -> None:
        payload = encode(FetchRefused(request_id=request.request_id, sha256=sha256, reason=reason))
        self.egress_bytes += len(payload)
        self.broker.publish(topics.device_topic(device_id, "refused"), payload, qos=1)
