"""`BundleTransfer`: answers devices' fetch requests with TUF metadata and bundle chunks over the broker.

Bundle chunks go to one broadcast topic per bundle; a chunk already sent within ``rebroadcast_window_s`` is
not sent again, so a wave of devices fetching together costs about one bundle of egress, and a device that
missed chunks asks for just those. A chunk request the hub cannot serve (no such bundle in the store, a chunk
index past its end) is answered at once with `FetchRefused` on the device's ``refused`` topic, so the device
fails its update with the hub's reason instead of waiting for its download timeout.
"""

from __future__ import annotations

import base64
import math
import threading
import time

from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.messages import FetchRefused, FetchRequest, MetadataReply, encode, encode_chunk
from fleet.wire.transport import Broker
from hub.bundles.store import ArtifactStore
from hub.bundles.tuf_repository import TufRepository
from hub.errors import HubError, NotFoundError

__all__ = ["BundleTransfer"]

_MAX_RECENT = 100_000


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
        self._recent: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def handle(self, device_id: str, request: FetchRequest) -> None:
        """Answer one fetch request (a `DeviceTraffic` fetch listener)."""
        if request.kind == "metadata":
            self._reply_metadata(device_id, request)
        else:
            self._send_chunks(device_id, request)

    def _reply_metadata(self, device_id: str, request: FetchRequest) -> None:
        name = request.name or ""
        try:
            data = self.tuf.metadata_file(name)
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
        now = time.monotonic()
        for index in wanted:
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
            if len(self._recent) > _MAX_RECENT:
                cutoff = now - self.rebroadcast_window_s
                self._recent = {k: t for k, t in self._recent.items() if t >= cutoff}

    def _refuse(self, device_id: str, request: FetchRequest, sha256: str, reason: str) -> None:
        payload = encode(FetchRefused(request_id=request.request_id, sha256=sha256, reason=reason))
        self.egress_bytes += len(payload)
        self.broker.publish(topics.device_topic(device_id, "refused"), payload, qos=1)
