"""Bundle transfer over MQTT: resumable chunked download and TUF metadata requests; an order whose transport
is ``http`` is handed to the `HttpDownloader` (`agent.http_download`) instead.

Chunks arrive on the bundle's broadcast topic, so devices updating together share one stream; each
device asks only for the chunks it still misses. Progress is kept on disk (``.part`` file plus a bitmap
of received chunks), so a download interrupted by a lost connection or a restart continues where it
stopped. Every chunk is checked against its digest and the whole file against the order's digest. A full
disk or a hub refusal (`FetchRefused`: no such bundle) stops the download at once with the reason and
removes its partial files.

Given the installed bundle as a base and a source of chunk indexes, `ChunkDownloader` first tries a delta
download (`agent.delta`): only the pieces the base lacks travel. When no delta is possible it downloads the
whole bundle.

For an order with ``retained_chunks`` the broker keeps every chunk retained on the bundle's retained topics:
a whole download subscribes to them too, takes what the broker sends at once, and asks the hub only for the
chunks still missing once they stop arriving (a broker that dropped or lost some, a hub that cleared them).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from agent.delta import DeltaDownload, DeltaUnavailable, IndexSource, fetch_delta, load_indexes
from agent.digests import sha256_file
from agent.errors import AgentError, TransferError, storage_error
from agent.http_download import HttpDownloader
from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.chunk_index import DELTA_MIN_SHARED
from fleet.wire.messages import (
    DeploymentOrder,
    FetchRefused,
    FetchRequest,
    MetadataReply,
    decode,
    decode_chunk,
    encode,
)
from fleet.wire.transport import Broker, Message

log = logging.getLogger(__name__)
MAX_CHUNKS_PER_REQUEST = 256


class BundleDownload:
    """One bundle's download on disk: the ``.part`` file, the bitmap of chunks it holds, and what went wrong.

    Chunk frames and hub refusals are fed in through `on_chunk` and `on_refused` (broker handlers); the
    `ChunkDownloader` loop asks for `missing` chunks until there are none, then calls `finish`.
    """

    def __init__(self, order: DeploymentOrder, directory: Path) -> None:
        self.order = order
        self.part = directory / f"{order.sha256}.part"
        self.have_path = directory / f"{order.sha256}.have"
        self.have: set[int] = set()
        self.corrupt_chunks = 0
        self.failure: AgentError | None = None
        self.arrived = threading.Event()
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Resume from an earlier partial download, or preallocate a fresh ``.part`` file."""
        order = self.order
        self.have = self._load_have()
        if self.part.exists() and self.part.stat().st_size == order.size_bytes:
            return
        self.have = set()
        try:
            with self.part.open("wb") as out:
                out.truncate(order.size_bytes)
        except OSError as exc:
            self.discard()
            action = f"cannot make room for the {order.size_bytes}-byte bundle in {self.part.parent}"
            raise storage_error(action, exc) from exc

    def missing(self) -> list[int]:
        """Indices of the chunks not yet written, in order."""
        with self._lock:
            return [i for i in range(self.order.chunk_count) if i not in self.have]

    def on_chunk(self, message: Message) -> None:
        """Write one chunk frame of this bundle; drop (and count) corrupt or mis-sized ones. An empty payload
        (the hub clearing a retained chunk) is no frame and is ignored."""
        order = self.order
        if not message.payload:
            return
        try:
            frame = decode_chunk(message.payload, topic=message.topic)
        except ProtocolError as exc:
            self.corrupt_chunks += 1
            log.warning("dropped chunk: %s", exc)
            return
        if frame.sha256 != order.sha256 or frame.count != order.chunk_count:
            return
        expected_len = min(order.chunk_size, order.size_bytes - frame.index * order.chunk_size)
        if len(frame.data) != expected_len:
            self.corrupt_chunks += 1
            log.warning("chunk %d has %d bytes, expected %d", frame.index, len(frame.data), expected_len)
            return
        with self._lock:
            if frame.index in self.have or self.failure is not None:
                return
            try:
                _write_chunk(self.part, frame.index * order.chunk_size, frame.data)
                self.have.add(frame.index)
                if len(self.have) % 16 == 0 or len(self.have) == order.chunk_count:
                    self._save_have()
            except OSError as exc:  # a full disk: stop and say why
                self.failure = storage_error(f"cannot write chunk {frame.index} to {self.part}", exc)
        self.arrived.set()

    def on_refused(self, message: Message) -> None:
        """The hub cannot serve this bundle: fail at once with its reason."""
        try:
            refusal = decode(FetchRefused, message.payload, topic=message.topic)
        except ProtocolError as exc:
            log.warning("dropped fetch refusal: %s", exc)
            return
        if refusal.sha256 != self.order.sha256:
            return
        with self._lock:
            self.failure = TransferError(f"the hub refused bundle {self.order.sha256[:12]}: {refusal.reason}")
        self.arrived.set()

    def wait_for_chunks(self, quiet_s: float) -> None:
        """Return once chunks stop arriving for ``quiet_s``, or the download completed or failed."""
        while self.arrived.wait(quiet_s):
            self.arrived.clear()
            with self._lock:
                if len(self.have) == self.order.chunk_count or self.failure is not None:
                    return

    def raise_failure(self) -> None:
        """Raise what stopped the download (full disk, hub refusal), removing its partial files."""
        if self.failure is not None:
            self.discard()
            raise self.failure

    def checkpoint(self) -> None:
        """Save the bitmap of received chunks, so a restart resumes from it."""
        with self._lock, contextlib.suppress(OSError):
            self._save_have()

    def finish(self, final: Path) -> Path:
        """Check the whole file against the order's digest and move it to ``final``."""
        digest = sha256_file(self.part)
        if digest != self.order.sha256:
            self.discard()
            raise TransferError(
                f"downloaded bundle digest {digest[:12]} != ordered {self.order.sha256[:12]}; "
                "discarded, it will be fetched again"
            )
        os.replace(self.part, final)
        self.have_path.unlink(missing_ok=True)
        return final

    def discard(self) -> None:
        """Remove the partial file and its bitmap."""
        self.part.unlink(missing_ok=True)
        self.have_path.unlink(missing_ok=True)
        self.have_path.with_suffix(".tmp").unlink(missing_ok=True)

    def _load_have(self) -> set[int]:
        try:
            data = json.loads(self.have_path.read_text())
            if data.get("chunk_size") == self.order.chunk_size:
                return {i for i in data["have"] if isinstance(i, int) and 0 <= i < self.order.chunk_count}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return set()

    def _save_have(self) -> None:
        tmp = self.have_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"have": sorted(self.have), "chunk_size": self.order.chunk_size}))
        os.replace(tmp, self.have_path)


class ChunkDownloader:
    """Downloads bundles into ``directory``; one download at a time per instance.

    The first request goes out as soon as the device listens on the bundle's topic: it tells the hub the device
    is ready, and the hub broadcasts a wave's bundle once all its devices asked. With ``ask_after_s`` the device
    first waits that long for chunks other devices asked for. An order with ``retained_chunks`` is first served
    by the broker from the retained topics; the device asks only once no chunk came for ``chunk_timeout_s``.
    ``index_source`` fetches a chunk index by its metadata name (`MetadataClient.get`); without it every download
    is whole. ``delta_reused_bytes`` and ``delta_fetched_bytes`` count what delta downloads took from the
    installed bundle and from the hub.
    Orders with the ``http`` transport go to ``http``; ``note`` says which of their sources the last download
    had to leave and why ("" for MQTT downloads and when the first source served the bundle).
    """

    def __init__(
        self,
        broker: Broker,
        device_id: str,
        directory: Path,
        *,
        chunk_timeout_s: float = 5.0,
        ask_after_s: float = 0.0,
        index_source: IndexSource | None = None,
        http: HttpDownloader | None = None,
    ) -> None:
        self.broker = broker
        self.http = http
        self.note = ""
        self.device_id = device_id
        self.directory = directory
        self.chunk_timeout_s = chunk_timeout_s
        self.ask_after_s = ask_after_s
        self.index_source = index_source
        directory.mkdir(parents=True, exist_ok=True)
        self.corrupt_chunks = 0
        self.requests_sent = 0
        self.delta_reused_bytes = 0
        self.delta_fetched_bytes = 0

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
        base: tuple[str, Path] | None = None,
    ) -> Path:
        """Fetch the order's bundle and return its path: as a delta against ``base`` (the installed bundle's
        digest and path) when the hub serves chunk indexes, else whole, resuming any earlier partial download.
        A whole download of a ``retained_chunks`` order takes the broker's retained chunks before asking the hub
        for any (a delta does not: it would pull the whole bundle)."""
        final = self.final_path(order.sha256)
        self.note = ""
        if final.exists() and sha256_file(final) == order.sha256:
            return final
        deadline = time.monotonic() + timeout_s
        if order.transport == "http":
            if self.http is None:
                raise TransferError("the order asks for an HTTP download and this agent has no HTTP downloader")
            path = self.http.download(
                order, final, deadline=deadline, progress=progress, cancelled=cancelled, base=base
            )
            self.note = self.http.note
            return path
        job = BundleDownload(order, self.directory)
        job.prepare()
        # Listen for chunks before trying a delta: a wave's bundle may be pushed while the delta is being tried.
        unsubscribes = [self.broker.subscribe(topics.bundle_topic(order.sha256), job.on_chunk, qos=1)]
        if base is not None and self.index_source is not None and base[0] != order.sha256 and base[1].exists():
            try:
                path = self._download_delta(self.index_source, order, base, final, deadline, cancelled)
            except DeltaUnavailable as exc:
                log.info("%s: downloading the whole bundle: %s", self.device_id, exc)
            except BaseException:  # a full disk, a timeout: nothing of this attempt is kept
                unsubscribes[0]()
                job.discard()
                raise
            else:
                unsubscribes[0]()
                job.discard()
                return path
        unsubscribes.append(
            self.broker.subscribe(topics.device_topic(self.device_id, "refused"), job.on_refused, qos=1)
        )
        try:
            if order.retained_chunks:
                # Chunks already held (a resumed download) come again and are skipped by `on_chunk`.
                unsubscribes.append(
                    self.broker.subscribe(topics.retained_chunks_filter(order.sha256), job.on_chunk, qos=1)
                )
            first_wait_s = self.chunk_timeout_s if order.retained_chunks else self.ask_after_s
            if first_wait_s > 0 and job.missing():
                job.wait_for_chunks(first_wait_s)
            while missing := job.missing():
                if progress is not None:
                    progress(1 - len(missing) / order.chunk_count)
                job.raise_failure()
                if cancelled():
                    raise TransferError(f"download of {order.sha256[:12]} cancelled")
                if time.monotonic() > deadline:
                    raise TransferError(
                        f"download of {order.sha256[:12]} timed out after {timeout_s:.0f} s with "
                        f"{len(missing)} of {order.chunk_count} chunks missing"
                    )
                job.arrived.clear()  # before asking: an in-process broker answers within the request
                self._request(order.sha256, missing[:MAX_CHUNKS_PER_REQUEST])
                # Wait while chunks keep flowing; re-ask for what is still missing once they stop.
                job.wait_for_chunks(self.chunk_timeout_s)
            if progress is not None:
                progress(1.0)
        finally:
            for unsubscribe in unsubscribes:
                unsubscribe()
            self.corrupt_chunks += job.corrupt_chunks
            if job.failure is None:
                job.checkpoint()
        return job.finish(final)

    def _download_delta(
        self,
        index_source: IndexSource,
        order: DeploymentOrder,
        base: tuple[str, Path],
        final: Path,
        deadline: float,
        cancelled: Callable[[], bool],
    ) -> Path:
        index, base_index = load_indexes(index_source, order.sha256, base[0])
        job = DeltaDownload(order, index, self.directory / f"{order.sha256}.delta")
        job.reuse(base[1], base_index)
        try:
            if job.reused_bytes < DELTA_MIN_SHARED * order.size_bytes:  # the hub pushes such bundles whole
                raise DeltaUnavailable(
                    f"bundle {order.sha256[:12]} shares {job.reused_bytes} bytes with the installed one, too few"
                )
            fetch_delta(
                self.broker, self.device_id, job, quiet_s=self.chunk_timeout_s, deadline=deadline, cancelled=cancelled
            )
            digest = sha256_file(job.part)
            if digest != order.sha256:
                raise DeltaUnavailable(f"reassembled bundle digest {digest[:12]} != ordered {order.sha256[:12]}")
            os.replace(job.part, final)
        finally:
            job.part.unlink(missing_ok=True)
            self.delta_reused_bytes += job.reused_bytes
            self.delta_fetched_bytes += job.fetched_bytes
        return final

    def discard(self, sha256: str) -> None:
        """Remove any partial or complete download of ``sha256``."""
        for suffix in (".part", ".have", ".bundle", ".delta", ".http"):
            (self.directory / f"{sha256}{suffix}").unlink(missing_ok=True)

    def _request(self, sha256: str, chunks: list[int]) -> None:
        request = FetchRequest(request_id=uuid.uuid4().hex, kind="chunks", sha256=sha256, chunks=chunks)
        self.requests_sent += 1
        self.broker.publish(topics.device_topic(self.device_id, "fetch"), encode(request), qos=1)


def metadata_waits(timeout_s: float, attempts: int) -> list[float]:
    """How long each of ``attempts`` requests for one metadata file waits for its answer: doubling, summing to
    ``timeout_s``. A request lost while the hub reconnected is asked again soon; a hub swamped by a wave's
    thousands of requests is not swamped further by every device asking again at a fixed pace."""
    first = timeout_s / (2**attempts - 1)
    return [first * 2**attempt for attempt in range(attempts)]


class MetadataClient:
    """Asks the hub for TUF metadata files over MQTT (request on ``fetch``, answer on ``meta``)."""

    def __init__(self, broker: Broker, device_id: str, *, timeout_s: float = 60.0, attempts: int = 4) -> None:
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
            # Ask again a few times within the timeout (a request sent while the hub was reconnecting is lost),
            # each wait twice the last and jittered, so a fleet that asked together does not ask again together
            for wait_s in metadata_waits(self.timeout_s, self.attempts):
                self.broker.publish(topics.device_topic(self.device_id, "fetch"), request, qos=1)
                if event.wait(wait_s * random.uniform(0.8, 1.0)):
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


def _write_chunk(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as out:
        out.seek(offset)
        out.write(data)
