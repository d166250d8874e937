"""Delta download: rebuild a new bundle from the pieces the installed one shares with it, fetch only the rest.

The hub serves a chunk index per bundle (`fleet.wire.chunk_index`, through the metadata path). With the index
of the new bundle and of the installed one, each new piece whose digest the installed bundle holds is read from
the installed slot, hashed and written into the ``.part`` file; the other pieces are asked for with a
``pieces`` `FetchRequest` and arrive on the bundle's pieces topic, each checked against its indexed digest. The
whole file is then checked against the order's digest, and VERIFY checks it against TUF exactly as after a full
download: the index only decides which bytes travel, never what is trusted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from agent.errors import AgentError, TransferError, storage_error
from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.chunk_index import ChunkIndex, Piece, index_name
from fleet.wire.messages import DeploymentOrder, FetchRefused, FetchRequest, decode, decode_chunk, encode
from fleet.wire.transport import Broker, Message

log = logging.getLogger(__name__)

IndexSource = Callable[[str], bytes | None]
MAX_PIECES_PER_REQUEST = 1024


class DeltaUnavailable(TransferError):
    """No delta is possible (no index from the hub, or nothing to reuse): download the whole bundle."""


def load_indexes(source: IndexSource, new_sha: str, base_sha: str) -> tuple[ChunkIndex, ChunkIndex]:
    """The chunk indexes of the new and the installed bundle, or `DeltaUnavailable`."""
    indexes = []
    for sha in (new_sha, base_sha):
        try:
            raw = source(index_name(sha))
        except TransferError as exc:  # a hub that does not answer: the whole download will say more
            raise DeltaUnavailable(str(exc)) from exc
        if raw is None:
            raise DeltaUnavailable(f"the hub serves no chunk index for bundle {sha[:12]}")
        try:
            indexes.append(ChunkIndex.decode(raw))
        except ProtocolError as exc:
            raise DeltaUnavailable(f"chunk index of bundle {sha[:12]}: {exc}") from exc
    return indexes[0], indexes[1]


class DeltaDownload:
    """One delta download into ``part``: reuse from ``base``, then fetch the missing pieces over the broker."""

    def __init__(self, order: DeploymentOrder, index: ChunkIndex, part: Path) -> None:
        if index.size != order.size_bytes:
            raise DeltaUnavailable(f"chunk index says {index.size} bytes, the order {order.size_bytes}")
        self.order = order
        self.index = index
        self.part = part
        self.missing: set[int] = set(range(len(index.pieces)))
        self.reused_bytes = 0
        self.fetched_bytes = 0
        self.failure: AgentError | None = None
        self.arrived = threading.Event()
        self._lock = threading.Lock()

    def reuse(self, base: Path, base_index: ChunkIndex) -> None:
        """Copy into ``part`` every piece ``base`` holds with the right digest; a piece that does not hash
        as indexed (a damaged slot) stays missing and is fetched."""
        have = base_index.by_digest()
        try:
            with self.part.open("wb") as out, base.open("rb") as source:
                out.truncate(self.order.size_bytes)
                for position, piece in enumerate(self.index.pieces):
                    old = have.get(piece.sha256)
                    if old is None or old.length != piece.length:
                        continue
                    source.seek(old.offset)
                    data = source.read(old.length)
                    if hashlib.sha256(data).digest() != piece.sha256:
                        continue
                    out.seek(piece.offset)
                    out.write(data)
                    self.missing.discard(position)
                    self.reused_bytes += piece.length
        except OSError as exc:
            self.part.unlink(missing_ok=True)
            raise storage_error(f"cannot assemble the bundle in {self.part}", exc) from exc

    def pending(self) -> list[int]:
        """Positions of the pieces still missing, in order."""
        with self._lock:
            return sorted(self.missing)

    def on_piece(self, message: Message) -> None:
        """Write one piece frame; drop frames of other bundles and pieces that do not match the index."""
        try:
            frame = decode_chunk(message.payload, topic=message.topic)
        except ProtocolError as exc:
            log.warning("dropped piece: %s", exc)
            return
        if frame.sha256 != self.order.sha256 or frame.count != len(self.index.pieces):
            return
        if not self.write_piece(frame.index, frame.data):
            log.warning("piece %d does not match the chunk index; dropped", frame.index)

    def write_piece(self, position: int, data: bytes) -> bool:
        """Write the piece at ``position`` if ``data`` has its indexed length and digest; return whether it
        matched (a disk error is kept in ``failure``)."""
        piece: Piece = self.index.pieces[position]
        if len(data) != piece.length or hashlib.sha256(data).digest() != piece.sha256:
            return False
        with self._lock:
            if position not in self.missing or self.failure is not None:
                return True
            try:
                with self.part.open("r+b") as out:
                    out.seek(piece.offset)
                    out.write(data)
                self.missing.discard(position)
                self.fetched_bytes += piece.length
            except OSError as exc:
                self.failure = storage_error(f"cannot write piece {position} to {self.part}", exc)
        self.arrived.set()
        return True

    def on_refused(self, message: Message) -> None:
        """The hub cannot serve these pieces: stop, so the caller falls back to a whole download."""
        try:
            refusal = decode(FetchRefused, message.payload, topic=message.topic)
        except ProtocolError as exc:
            log.warning("dropped fetch refusal: %s", exc)
            return
        if refusal.sha256 == self.order.sha256:
            with self._lock:
                self.failure = DeltaUnavailable(f"the hub refused pieces of {self.order.sha256[:12]}: {refusal.reason}")
            self.arrived.set()

    def wait_for_pieces(self, quiet_s: float) -> None:
        """Return once pieces stop arriving for ``quiet_s``, or the download completed or failed."""
        while self.arrived.wait(quiet_s):
            self.arrived.clear()
            with self._lock:
                if not self.missing or self.failure is not None:
                    return


def fetch_delta(
    broker: Broker,
    device_id: str,
    job: DeltaDownload,
    *,
    quiet_s: float,
    deadline: float,
    cancelled: Callable[[], bool],
) -> None:
    """Ask for ``job``'s missing pieces until it has them all; raise what stopped it."""
    sha = job.order.sha256
    unsubscribes = [
        broker.subscribe(topics.bundle_pieces_topic(sha), job.on_piece, qos=1),
        broker.subscribe(topics.device_topic(device_id, "refused"), job.on_refused, qos=1),
    ]
    try:
        while missing := job.pending():
            if job.failure is not None:
                raise job.failure
            if cancelled():
                raise TransferError(f"download of {sha[:12]} cancelled")
            if time.monotonic() > deadline:
                raise TransferError(f"delta download of {sha[:12]} timed out with {len(missing)} pieces missing")
            job.arrived.clear()  # before asking: an in-process broker answers within the request
            request = FetchRequest(
                request_id=uuid.uuid4().hex, kind="pieces", sha256=sha, chunks=missing[:MAX_PIECES_PER_REQUEST]
            )
            broker.publish(topics.device_topic(device_id, "fetch"), encode(request), qos=1)
            job.wait_for_pieces(quiet_s)
        if job.failure is not None:
            raise job.failure
    finally:
        for unsubscribe in unsubscribes:
            unsubscribe()
