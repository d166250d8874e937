"""Bundle transfer over MQTT: resumable chunked download and TUF metadata requests.

Chunks arrive on the bundle's broadcast topic, so devices updating together share one stream; each
device asks only for the chunks it still misses. Progress is kept on disk (``.part`` file plus a bitmap
of received chunks), so a download interrupted by a lost connection or a restart continues where it
stopped. Every chunk is checked against its digest and the whole file against the order's digest.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from agent.errors import TransferError
from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.messages import DeploymentOrder, FetchRequest, MetadataReply, decode, decode_chunk, encode
from fleet.wire.transport import Broker, Message

log = logging.getLogger(__name__)
MAX_CHUNKS_PER_REQUEST = 256


class ChunkDownloader:
    """Downloads bundles into ``directory``; one download at a time per instance."""

    def __init__(self, broker: Broker, device_id: str, directory: Path, *, chunk_timeout_s: float = 5.0) -> None:
        self.broker = broker
        self.device_id = device_id
        self.directory = directory
        self.chunk_timeout_s = chunk_timeout_s
        directory.mkdir(parents=True, exist_ok=True)
        self.corrupt_chunks = 0
        self.requests_sent = 0

    def final_path(self, sha256: str) -> Path:
        """Where a complete download of ``sha256`` lives."""
        return self.directory / f"{sha256}.bundle"

    def download(
        self,
        order: DeploymentOrder,
        *,
        timeout_s: float = 600.0,
        progress: Callable[[float], None] | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Path:
        """Fetch the order's bundle (resuming any earlier partial download) and return its path."""
        final = self.final_path(order.sha256)
        if final.exists() and _sha256_file(final) == order.sha256:
            return final
        part = self.directory / f"{order.sha256}.part"
        have_path = self.directory / f"{order.sha256}.have"
        have = self._load_have(have_path, order)
        if not part.exists() or part.stat().st_size != order.size_bytes:
            try:
                _preallocate(part, order.size_bytes)
            except OSError as exc:
                part.unlink(missing_ok=True)
                raise TransferError(
                    f"cannot make room for the {order.size_bytes}-byte bundle in "
                    f"{self.directory}: {exc.strerror or exc}"
                ) from exc
            have = set()
        lock = threading.Lock()
        failures: list[str] = []
        arrived = threading.Event()

        def on_chunk(message: Message) -> None:
            try:
                frame = decode_chunk(message.payload, topic=message.topic)
            except ProtocolError as exc:
                self.corrupt_chunks += 1
                log.warning("%s: dropped chunk: %s", self.device_id, exc)
                return
            if frame.sha256 != order.sha256 or frame.count != order.chunk_count:
                return
            expected_len = min(order.chunk_size, order.size_bytes - frame.index * order.chunk_size)
            if len(frame.data) != expected_len:
                self.corrupt_chunks += 1
                log.warning(
                    "%s: chunk %d has %d bytes, expected %d", self.device_id, frame.index, len(frame.data), expected_len
                )
                return
            with lock:
                if frame.index in have:
                    return
                try:
                    _write_chunk(part, frame.index * order.chunk_size, frame.data)
                    have.add(frame.index)
                    if len(have) % 16 == 0 or len(have) == order.chunk_count:
                        self._save_have(have_path, have, order.chunk_size)
                except OSError as exc:  # a full disk: stop, keep what is safely written, say why
                    failures.append(f"cannot write chunk {frame.index} to {part}: {exc.strerror or exc}")
            arrived.set()

        unsubscribe = self.broker.subscribe(topics.bundle_topic(order.sha256), on_chunk, qos=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                with lock:
                    missing = [i for i in range(order.chunk_count) if i not in have]
                if progress is not None:
                    progress(1 - len(missing) / order.chunk_count)
                if not missing:
                    break
                if failures:
                    raise TransferError(failures[0])
                if cancelled():
                    raise TransferError(f"download of {order.sha256[:12]} cancelled")
                if time.monotonic() > deadline:
                    raise TransferError(
                        f"download of {order.sha256[:12]} timed out after {timeout_s:.0f} s with "
                        f"{len(missing)} of {order.chunk_count} chunks missing"
                    )
                self._request(order.sha256, missing[:MAX_CHUNKS_PER_REQUEST])
                # Wait while chunks keep flowing; re-ask for what is still missing once they stop.
                arrived.clear()
                while arrived.wait(self.chunk_timeout_s):
                    arrived.clear()
                    with lock:
                        if len(have) == order.chunk_count or failures:
                            break
        finally:
            unsubscribe()
            with lock, contextlib.suppress(OSError):
                self._save_have(have_path, have, order.chunk_size)
        digest = _sha256_file(part)
        if digest != order.sha256:
            part.unlink(missing_ok=True)
            have_path.unlink(missing_ok=True)
            raise TransferError(
                f"downloaded bundle digest {digest[:12]} != ordered {order.sha256[:12]}; "
                "discarded, it will be fetched again"
            )
        os.replace(part, final)
        have_path.unlink(missing_ok=True)
        return final

    def discard(self, sha256: str) -> None:
        """Remove any partial or complete download of ``sha256``."""
        for suffix in (".part", ".have", ".bundle"):
            (self.directory / f"{sha256}{suffix}").unlink(missing_ok=True)

    def _request(self, sha256: str, chunks: list[int]) -> None:
        request = FetchRequest(request_id=uuid.uuid4().hex, kind="chunks", sha256=sha256, chunks=chunks)
        self.requests_sent += 1
        self.broker.publish(topics.device_topic(self.device_id, "fetch"), encode(request), qos=1)

    @staticmethod
    def _load_have(path: Path, order: DeploymentOrder) -> set[int]:
        try:
            data = json.loads(path.read_text())
            if data.get("chunk_size") == order.chunk_size:
                return {i for i in data["have"] if isinstance(i, int) and 0 <= i < order.chunk_count}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return set()

    @staticmethod
    def _save_have(path: Path, have: set[int], chunk_size: int) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"have": sorted(have), "chunk_size": chunk_size}))
        os.replace(tmp, path)


class MetadataClient:
    """Asks the hub for TUF metadata files over MQTT (request on ``fetch``, answer on ``meta``)."""

    def __init__(self, broker: Broker, device_id: str, *, timeout_s: float = 10.0, attempts: int = 4) -> None:
        self.broker = broker
        self.device_id = device_id
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._waiting: dict[str, tuple[threading.Event, list[MetadataReply]]] = {}
        self._lock = threading.Lock()
        self._unsubscribe = broker.subscribe(topics.device_topic(device_id, "meta"), self._on_reply, qos=1)

    def get(self, name: str) -> bytes | None:
        """The metadata file ``name``, or None when the hub has no such file."""
        request_id = uuid.uuid4().hex
        event = threading.Event()
        box: list[MetadataReply] = []
        with self._lock:
            self._waiting[request_id] = (event, box)
        try:
            request = encode(FetchRequest(request_id=request_id, kind="metadata", name=name))
            # Ask again a few times within the timeout: a request sent while the hub was reconnecting is lost.
            for _ in range(self.attempts):
                self.broker.publish(topics.device_topic(self.device_id, "fetch"), request, qos=1)
                if event.wait(self.timeout_s / self.attempts):
                    break
            else:
                raise TransferError(
                    f"hub did not answer the request for TUF metadata {name} within {self.timeout_s:.0f} s"
                )
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)
        reply = box[0]
        if not reply.found:
            return None
        try:
            return base64.b64decode(reply.data_b64, validate=True)
        except ValueError as exc:
            raise TransferError(f"metadata reply for {name} is not valid base64") from exc

    def close(self) -> None:
        """Stop listening for replies."""
        self._unsubscribe()

    def _on_reply(self, message: Message) -> None:
        try:
            reply = decode(MetadataReply, message.payload, topic=message.topic)
        except ProtocolError as exc:
            log.warning("%s: dropped metadata reply: %s", self.device_id, exc)
            return
        with self._lock:
            waiting = self._waiting.get(reply.request_id)
        if waiting is not None:
            waiting[1].append(reply)
            waiting[0].set()


def _preallocate(path: Path, size: int) -> None:
    with path.open("wb") as out:
        out.truncate(size)


def _write_chunk(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as out:
        out.seek(offset)
        out.write(data)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
