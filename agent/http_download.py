"""Bundle download over HTTP(S) with range requests, for orders whose transport is ``http``.

The order names its sources: mirrors first, in order, then the hub (`agent.range_client.BundleSource`). The
bundle grows in ``{sha256}.http`` next to the final file; a download cut by a lost connection (or a restart)
resumes from the partial file's size with ``Range: bytes=N-``, backing off between tries of the same source
(exponential with jitter, `fleet.wire.backoff.Backoff`). A source that keeps failing, refuses (401, 403, 404, 416)
or serves a file that does not hash to the order's digest is left for the next one; one that served wrong
bytes is named in the download's `note`, which ends up in the device's update history. VERIFY then checks the
file against TUF exactly as after an MQTT download: sources are trusted for availability, never for content.

With the installed bundle as a base, the new bundle's chunk index (``chunk-index.{sha256}``, from the first
source that has it) says which content-defined pieces are missing; each run of adjacent missing pieces is one
range request, each piece is checked against its indexed digest, and a source that serves a bad piece is left
for the next. No delta possible (no index anywhere, too little shared): the whole bundle is downloaded.
"""

from __future__ import annotations

import http.client
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from agent.delta import DeltaDownload, DeltaUnavailable, load_indexes
from agent.digests import sha256_file
from agent.errors import TransferError, storage_error
from agent.range_client import BundleSource, RangeClient, SourceUnavailable, copy_body
from fleet.errors import ProtocolError
from fleet.wire.backoff import Backoff
from fleet.wire.chunk_index import DELTA_MIN_SHARED, MAX_INDEX_BYTES, ChunkIndex
from fleet.wire.messages import DeploymentOrder

log = logging.getLogger(__name__)
MAX_RANGE_BYTES = 4 * 1024 * 1024


class SourceFailed(TransferError):
    """A source is given up for this download (after its retries, or at once for a refusal)."""


class HttpDownloader:
    """Downloads bundles into ``directory`` from the sources an order names.

    ``credentials`` (device id, secret) go to the hub only. Each source gets ``attempts`` tries in a row
    without progress, ``retry_initial_s`` to ``retry_max_s`` apart. ``fetched_bytes`` counts the body bytes
    received, ``reused_bytes`` what delta downloads took from the installed bundle; ``note`` says which
    sources the last download had to leave and why ("" when the first one served it).
    """

    def __init__(
        self,
        directory: Path,
        client: RangeClient,
        *,
        credentials: tuple[str, str] | None,
        attempts: int = 4,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.directory = directory
        self.client = client
        self.credentials = credentials
        self.attempts = attempts
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.sleep = sleep
        self.fetched_bytes = 0
        self.reused_bytes = 0
        self.note = ""

    def sources(self, order: DeploymentOrder) -> list[BundleSource]:
        """The order's mirrors in order, then the hub."""
        found = [BundleSource(url) for url in order.mirrors]
        if order.hub_url is not None:
            found.append(BundleSource(order.hub_url, self.credentials))
        return found

    def part_path(self, sha256: str) -> Path:
        """Where a partial download of ``sha256`` grows."""
        return self.directory / f"{sha256}.http"

    def download(
        self,
        order: DeploymentOrder,
        final: Path,
        *,
        deadline: float,
        progress: Callable[[float], None] | None = None,
        cancelled: Callable[[], bool] = lambda: False,
        base: tuple[str, Path] | None = None,
    ) -> Path:
        """Fetch the order's bundle to ``final`` (a delta against ``base`` when possible); raise `TransferError`
        naming every source's failure when none could serve it."""
        self.note = ""
        sources = self.sources(order)
        if base is not None and base[0] != order.sha256 and base[1].exists():
            try:
                return self._delta(order, sources, base, final)
            except DeltaUnavailable as exc:
                log.info("downloading %s whole: %s", order.sha256[:12], exc)
        part = self.part_path(order.sha256)
        problems: list[str] = []
        for source in sources:
            for whole_again in (False, True):
                resumed = part.exists() and part.stat().st_size > 0
                try:
                    self._fetch(source, order, part, deadline, progress, cancelled)
                except SourceFailed as exc:
                    problems.append(str(exc))
                    break
                digest = sha256_file(part)
                if digest == order.sha256:
                    os.replace(part, final)
                    self.note = "; ".join(problems)
                    return final
                part.unlink(missing_ok=True)
                if resumed and not whole_again:
                    continue  # the first bytes may have come from an earlier source: all of them from this one
                problems.append(
                    f"refused {source.label}: it served bytes that fail verification "
                    f"(sha256 {digest[:12]}, signed {order.sha256[:12]})"
                )
                break
        raise TransferError(f"no source served bundle {order.sha256[:12]}: {'; '.join(problems) or 'none named'}")

    def _fetch(
        self,
        source: BundleSource,
        order: DeploymentOrder,
        part: Path,
        deadline: float,
        progress: Callable[[float], None] | None,
        cancelled: Callable[[], bool],
    ) -> None:
        """Bring ``part`` to the order's size from ``source``, resuming and retrying; `SourceFailed` gives up."""
        backoff = Backoff(self.retry_initial_s, self.retry_max_s)
        failures = 0
        while (have := _size(part)) < order.size_bytes:
            if cancelled():
                raise TransferError(f"download of {order.sha256[:12]} cancelled")
            if time.monotonic() > deadline:
                raise TransferError(
                    f"download of {order.sha256[:12]} timed out with {have} of {order.size_bytes} bytes"
                )
            if progress is not None:
                progress(have / order.size_bytes)
            try:
                body, offset = self.client.open(source, order.sha256, start=have)
                if not self._append(body, part, offset, order.size_bytes - offset):
                    raise SourceUnavailable(f"{source.label} sent no bytes from byte {offset}", retry=True)
            except SourceUnavailable as exc:
                if not exc.retry:
                    raise SourceFailed(str(exc)) from exc
                if _size(part) > have:  # cut after some bytes arrived: resume at once
                    log.info("%s; resuming", exc)
                    failures, backoff = 0, Backoff(self.retry_initial_s, self.retry_max_s)
                    continue
                failures += 1
                if failures >= self.attempts:
                    raise SourceFailed(f"{exc} ({failures} tries)") from exc
                log.info("%s; retrying", exc)
                self.sleep(min(backoff.next_delay(), max(0.0, deadline - time.monotonic())))
                continue
            failures, backoff = 0, Backoff(self.retry_initial_s, self.retry_max_s)

    def _append(self, body: BinaryIO, part: Path, offset: int, limit: int) -> int:
        """Write ``body`` into ``part`` from ``offset`` (0: the source sent the whole file again)."""
        try:
            with part.open("r+b" if part.exists() else "wb") as out:
                out.truncate(offset)
                out.seek(offset)
                size_before = offset
                try:
                    return copy_body(body, out, limit)
                finally:
                    out.flush()
                    self.fetched_bytes += out.tell() - size_before
        except SourceUnavailable:
            raise
        except OSError as exc:
            raise storage_error(f"cannot write the bundle download {part}", exc) from exc

    # -- delta ----------------------------------------------------------------------------------------------

    def _delta(self, order: DeploymentOrder, sources: list[BundleSource], base: tuple[str, Path], final: Path) -> Path:
        index, base_index = load_indexes(lambda name: self._index(sources, name), order.sha256, base[0])
        job = DeltaDownload(order, index, self.directory / f"{order.sha256}.delta")
        job.reuse(base[1], base_index)
        try:
            if job.reused_bytes < DELTA_MIN_SHARED * order.size_bytes:
                raise DeltaUnavailable(f"bundle {order.sha256[:12]} shares {job.reused_bytes} bytes, too few")
            problems = []
            for source in sources:
                try:
                    self._pieces(source, job)
                    break
                except SourceUnavailable as exc:
                    problems.append(str(exc))
            else:
                raise DeltaUnavailable(f"no source served the missing pieces: {'; '.join(problems)}")
            digest = sha256_file(job.part)
            if digest != order.sha256:
                raise DeltaUnavailable(f"reassembled bundle digest {digest[:12]} != ordered {order.sha256[:12]}")
            os.replace(job.part, final)
            self.note = "; ".join(problems)
            self.reused_bytes += job.reused_bytes
        finally:
            job.part.unlink(missing_ok=True)
        return final

    def _index(self, sources: list[BundleSource], name: str) -> bytes | None:
        """The chunk index ``name`` from the first source that serves a well-formed one (mirrors may have none)."""
        for source in sources:
            try:
                body, _ = self.client.open(source, name)
                with body:
                    data = body.read(MAX_INDEX_BYTES + 1)
                self.fetched_bytes += len(data)
                ChunkIndex.decode(data)
                return data
            except (SourceUnavailable, ProtocolError, OSError, http.client.HTTPException) as exc:
                log.info("no chunk index %s from %s: %s", name, source.label, exc)
        return None

    def _pieces(self, source: BundleSource, job: DeltaDownload) -> None:
        """Fetch ``job``'s missing pieces from ``source``, one range request per run of adjacent pieces."""
        pieces = job.index.pieces
        for positions in _runs(job.index, job.pending()):
            start = pieces[positions[0]].offset
            end = pieces[positions[-1]].offset + pieces[positions[-1]].length
            body, offset = self.client.open(source, job.order.sha256, start=start, end=end - 1)
            try:
                if offset != start:
                    raise SourceUnavailable(f"{source.label} ignored the range request", retry=False)
                data = body.read(end - start)
            except (OSError, http.client.HTTPException) as exc:
                raise SourceUnavailable(f"{source.label}: connection cut: {exc!r}", retry=True) from exc
            finally:
                body.close()
            self.fetched_bytes += len(data)
            for position in positions:
                piece = pieces[position]
                if not job.write_piece(position, data[piece.offset - start : piece.offset - start + piece.length]):
                    raise SourceUnavailable(
                        f"refused {source.label}: it served piece {position} unlike its chunk index", retry=False
                    )
                if job.failure is not None:
                    raise job.failure


def _runs(index: ChunkIndex, positions: list[int]) -> list[list[int]]:
    """``positions`` (sorted) grouped into runs of adjacent pieces of at most `MAX_RANGE_BYTES`."""
    runs: list[list[int]] = []
    size = 0
    for position in positions:
        length = index.pieces[position].length
        if runs and runs[-1][-1] == position - 1 and size + length <= MAX_RANGE_BYTES:
            runs[-1].append(position)
            size += length
        else:
            runs.append([position])
            size = length
    return runs


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
