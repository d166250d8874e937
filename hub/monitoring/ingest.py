"""Telemetry ingestion: batches from many devices decoded and validated in blocks, then written in bulk.

Raw messages (`submit_payload`, what the MQTT dispatcher hands over, untouched) are queued. A decoder thread
takes whatever has arrived as one block: ``decode`` (`DeviceTraffic.decode_telemetry_block`, which checks the
senders and counts what it refuses) decodes it, `fleet.telemetry_blocks.check_batches` validates it, every
feature sketch of the block in one numpy pass, and the block joins the write queue. The preparer thread
gathers what arrived within ``linger_s`` of the oldest waiting batch (about ``max_batch`` at most) and prepares
its write without the database (`Registry.prepare_checked`: rows, window aggregates); the writer thread stores
each prepared write in one transaction (`Registry.store_prepared`). So decoding and preparing the next write
overlap the database's work on this one. `submit` takes an already decoded batch and validates it at
the call. A batch that fails validation is rejected, counted and refused to its device with the one-line
reason of `fleet.telemetry.validate_batch`.

Each write stores the batches whose id is new, merging them per model version,
device class and window into the aggregates in the same transaction; only those reach `FleetMetrics` and
the ``on_stored`` callback, duplicates are counted. A write the database refuses is split in halves and
retried, so one batch it cannot store is rejected alone (and counted) and the others are stored; a write
that fails because the database is unreachable stores nothing and acknowledges nothing (devices send those
batches again). After each write, every device gets one `TelemetryAck` naming its batches committed (new or
duplicate) or refused: only then may it delete them. Every ``interval_s`` of the `RetentionPolicy` the
writer deletes old raw batches (already in the window aggregates) and older window aggregates
(`Registry.prune_telemetry`), so stored telemetry stays bounded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from fleet.errors import ProtocolError
from fleet.telemetry import validate_batch
from fleet.telemetry_blocks import CheckedBatch, check_batches, explain
from fleet.wire import topics
from fleet.wire.fast_telemetry import FastTelemetryBatch, from_message, to_message
from fleet.wire.messages import MAX_ACK_BATCHES, TelemetryAck, TelemetryBatch, encode
from fleet.wire.transport import Message, Publisher
from hub.monitoring.metrics import FleetMetrics
from hub.registry import Registry
from hub.registry.telemetry_writes import PreparedTelemetry

__all__ = ["Acknowledge", "BlockDecoder", "RetentionPolicy", "TelemetryIngestor", "publish_acks"]

log = logging.getLogger(__name__)
_FLUSH = object()
#: The database could not be reached: nothing was stored, and nothing about the batches is known to be wrong.
_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)
#: Raw messages the decoder takes at once at most (whatever has arrived, up to this).
_DECODE_BLOCK: Final = 512
#: After the first message of a block the decoder sleeps this long, so that a burst reaches it as one block
#: rather than one wake-up (and one GIL hand-over) per message.
_DECODE_GATHER_S: Final = 0.005
Acknowledge = Callable[[TelemetryAck], None]
#: Decodes a block of raw messages: a batch per message (a pydantic one still to validate where the fast decoder
#: stood aside), or None where it refused (and counted) the message.
BlockDecoder = Callable[[Sequence[Message]], list[FastTelemetryBatch | TelemetryBatch | None]]


def _check_message(batch: TelemetryBatch) -> CheckedBatch:
    """A pydantic batch validated (`ProtocolError` with the reason) and ready to write."""
    validate_batch(batch)
    fast = from_message(batch)
    return check_batches([fast])[0] or explain(fast)


def publish_acks(broker: Publisher) -> Acknowledge:
    """Send each acknowledgement to its device's ``telemetry-ack`` topic at QoS 0: a device sends a batch whose
    acknowledgement it missed again and is acknowledged again (docs/protocol.md), so a broker round trip per
    acknowledgement (QoS 1) would buy nothing but a PUBACK to handle for every device of every write."""

    def acknowledge(ack: TelemetryAck) -> None:
        broker.publish(topics.device_topic(ack.device_id, "telemetry-ack"), encode(ack), qos=0)

    return acknowledge


@dataclass
class _WriteResult:
    fresh: list[CheckedBatch] = field(default_factory=list)
    committed: list[CheckedBatch] = field(default_factory=list)
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)
    """batch id -> (device id, reason)"""
    unstored: int = 0


@dataclass(frozen=True)
class RetentionPolicy:
    """How much telemetry to keep: raw batches by age and count, window aggregates by age (None: no limit)."""

    max_age_s: float | None = 7 * 24 * 3600.0
    max_rows: int | None = 1_000_000
    aggregate_max_age_s: float | None = 90 * 24 * 3600.0
    interval_s: float = 300.0
    """How often the writer prunes; 0 never (another worker does)."""


class TelemetryIngestor:
    """A decoder, a preparer and a writer thread; a write covers what arrived within ``linger_s`` of its oldest
    batch.

    ``aggregate_shard`` names this writer's own window-aggregate rows (`Registry.store_prepared`): give each
    worker that shares telemetry a distinct one, so their writes never wait on each other.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        max_batch: int = 2000,
        linger_s: float = 0.05,
        on_stored: Callable[[list[TelemetryBatch]], None] | None = None,
        metrics: FleetMetrics | None = None,
        retention: RetentionPolicy | None = None,
        acknowledge: Acknowledge | None = None,
        decode: BlockDecoder | None = None,
        aggregate_window_s: float = 3600.0,
        aggregate_shard: str = "",
    ) -> None:
        self._registry = registry
        self._decode = decode
        self._aggregate_window_s = aggregate_window_s
        self._aggregate_shard = aggregate_shard
        self._acknowledge = acknowledge
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._on_stored = on_stored
        self._metrics = metrics
        self._retention = retention
        self._last_prune = time.monotonic()
        self._prune_lock = threading.Lock()
        # (when queued, block); None: flush
        self._queue: queue.Queue[tuple[float, list[CheckedBatch]] | None] = queue.Queue(maxsize=1_000)
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self.received = 0
        self.stored = 0
        self.duplicates = 0
        self.rejected = 0
        self.unstored = 0
        self.pruned = 0
        self._raw: queue.Queue[object] = queue.Queue(maxsize=100_000)
        self._closing = threading.Event()
        self._decoder: threading.Thread | None = None
        if decode is not None:
            self._decoder = threading.Thread(target=self._run_decoder, name="telemetry-decoder", daemon=True)
            self._decoder.start()
        # (batches, their write prepared or None where preparing failed); None: stop
        self._prepared: queue.Queue[tuple[list[CheckedBatch], PreparedTelemetry | None] | None] = queue.Queue(maxsize=1)
        self._preparer = threading.Thread(target=self._run_preparer, name="telemetry-preparer", daemon=True)
        self._preparer.start()
        self._thread = threading.Thread(target=self._run_writer, name="telemetry-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: TelemetryBatch) -> None:
        """Validate and queue a batch for writing (a full queue blocks the caller, nothing is dropped).

        A malformed batch raises `ProtocolError` after being counted as rejected and refused to its device.
        """
        try:
            checked = _check_message(batch)
        except ProtocolError as exc:
            self.reject()
            self._send_acks([], {batch.batch_id: (batch.device_id, str(exc))})
            raise
        with self._idle:
            self._pending += 1
            self.received += 1
        self._queue.put((time.monotonic(), [checked]))

    def submit_payload(self, message: Message) -> None:
        """Queue a raw telemetry message; the decoder thread decodes and validates it (needs ``decode``).
        Called on the MQTT dispatcher thread: it only counts and queues."""
        if self._decoder is None:
            raise TypeError("submit_payload needs the ingestor to be built with decode=")
        with self._idle:
            self._pending += 1
            self.received += 1
        self._raw.put(message)

    def _run_decoder(self) -> None:
        """Decode and validate raw messages block by block into the write queue, while the writer waits on the
        database."""
        while not (self._closing.is_set() and self._raw.empty()):
            try:
                first = self._raw.get(timeout=0.5)
            except queue.Empty:
                continue
            if self._raw.qsize() < _DECODE_BLOCK and not self._closing.is_set():
                time.sleep(_DECODE_GATHER_S)
            block = [first]
            try:
                while len(block) < _DECODE_BLOCK:
                    block.append(self._raw.get_nowait())
            except queue.Empty:
                pass
            messages = [m for m in block if isinstance(m, Message)]
            if not messages:
                continue
            try:
                self._decode_block(messages)
            except _UNAVAILABLE as exc:  # checking the senders needs the database; devices resend
                log.warning("database unavailable, %d telemetry batches not decoded: %s", len(messages), exc)
                with self._idle:
                    self.unstored += len(messages)
                self._done(len(messages))
            except Exception:  # never lose the thread; the batches stay unacknowledged, devices resend them
                log.exception("decoding %d telemetry messages failed", len(messages))
                self._done(len(messages))

    def _decode_block(self, messages: list[Message]) -> None:
        assert self._decode is not None
        decoded = self._decode(messages)
        good: list[CheckedBatch] = []
        refused: list[tuple[str, str, str]] = []  # (batch id, device id, reason)
        fast = [b for b in decoded if isinstance(b, FastTelemetryBatch)]
        for batch, checked in zip(fast, check_batches(fast), strict=True):
            try:
                good.append(checked or explain(batch))
            except ProtocolError as exc:
                refused.append((batch.batch_id, batch.device_id, str(exc)))
        for slow in (b for b in decoded if isinstance(b, TelemetryBatch)):
            try:
                good.append(_check_message(slow))
            except ProtocolError as exc:
                refused.append((slow.batch_id, slow.device_id, str(exc)))
        undecoded = len(messages) - len(good) - len(refused)
        if undecoded:  # refused and counted by the decoder's rejection listeners
            self._done(undecoded)
        if refused:
            for _, _, reason in refused:
                log.warning("rejected telemetry: %s", reason)
            self.reject(len(refused))
            self._done(len(refused))
            try:
                self._send_acks([], {batch_id: (device_id, reason) for batch_id, device_id, reason in refused})
            except Exception:
                log.exception("refusing %d telemetry batches failed", len(refused))
        if good:
            self._queue.put((time.monotonic(), good))

    def _done(self, n: int) -> None:
        with self._idle:
            self._pending -= n
            self._idle.notify_all()

    def reject(self, n: int = 1) -> None:
        """Count batches refused before the queue (undecodable, from an unknown device, malformed)."""
        with self._idle:
            self.rejected += n
        if self._metrics is not None:
            self._metrics.count_batches("rejected", n)

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until everything submitted so far is written."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout_s)

    def wait_stored(self, at_least: int, timeout_s: float = 10.0) -> bool:
        """Block until at least ``at_least`` new batches were written since start (or the timeout passes)."""
        with self._idle:
            return self._idle.wait_for(lambda: self.stored >= at_least, timeout_s)

    def prune(self) -> int:
        """Delete raw batches and window aggregates beyond the retention policy now; return how many batches."""
        policy = self._retention
        if policy is None:
            return 0
        with self._prune_lock:
            self._last_prune = time.monotonic()
            pruned = self._registry.prune_telemetry(
                max_age_s=policy.max_age_s, max_rows=policy.max_rows, aggregate_max_age_s=policy.aggregate_max_age_s
            )
            with self._idle:  # counted before the lock is let go: a prune that follows sees this one's count
                self.pruned += pruned
        return pruned

    def close(self) -> None:
        """Decode and write what is queued and stop the decoder, the preparer and the writer."""
        self._closing.set()
        if self._decoder is not None:
            self._raw.put(_FLUSH)
            self._decoder.join(timeout=30)
        self._stop.set()  # only now: the preparer stops once the queue is empty, the decoder fills it
        self._queue.put(None)
        self._preparer.join(timeout=30)
        self._prepared.put(None)
        self._thread.join(timeout=30)

    def _run_preparer(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if first is None:
                continue
            queued_at, items = first[0], list(first[1])
            # lingers for the oldest waiting batch only: a block that waited through the previous write goes
            # out with what has arrived since, at once
            deadline = queued_at + self._linger_s
            while len(items) < self._max_batch:
                try:
                    block = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if block is None:  # closing: write what is here now
                    break
                items.extend(block[1])
            self._prepared.put((items, self._prepare(items)))

    def _prepare(self, batches: list[CheckedBatch]) -> PreparedTelemetry | None:
        try:
            return self._registry.prepare_checked(
                batches, aggregate_window_s=self._aggregate_window_s, shard=self._aggregate_shard
            )
        except Exception:  # the writer stores them in parts, refusing the batch that cannot be stored alone
            return None

    def _run_writer(self) -> None:
        while True:
            try:
                job = self._prepared.get(timeout=0.5)
            except queue.Empty:
                self._maybe_prune()
                continue
            if job is None:
                return
            self._write(*job)
            self._maybe_prune()

    def _maybe_prune(self) -> None:
        policy = self._retention
        if policy is None or policy.interval_s <= 0 or time.monotonic() - self._last_prune < policy.interval_s:
            return
        try:
            self.prune()
        except Exception:
            log.exception("pruning telemetry failed; retried in %.0f s", policy.interval_s)

    def _write(self, batches: list[CheckedBatch], prepared: PreparedTelemetry | None) -> None:
        if not batches:
            return
        result = self._store_isolating(batches, prepared)
        duplicates = len(result.committed) - len(result.fresh)
        with self._idle:
            self.stored += len(result.fresh)
            self.duplicates += duplicates
            self.unstored += result.unstored
        if result.refused:
            self.reject(len(result.refused))
        try:
            self._send_acks(result.committed, result.refused)
        except Exception:  # devices send these batches again and get the acknowledgement then
            log.exception("acknowledging %d telemetry batches failed", len(result.committed) + len(result.refused))
        try:
            if self._metrics is not None:
                self._metrics.observe_block([c.batch for c in result.fresh])
                if duplicates:
                    self._metrics.count_batches("duplicate", duplicates)
                if result.unstored:
                    self._metrics.count_batches("unstored", result.unstored)
            if self._on_stored is not None and result.fresh:
                self._on_stored([to_message(c.batch) for c in result.fresh])
        except Exception:
            log.exception("observing %d stored telemetry batches failed", len(result.fresh))
        self._done(len(batches))

    def _store_isolating(self, batches: list[CheckedBatch], prepared: PreparedTelemetry | None = None) -> _WriteResult:
        """Store ``batches`` (``prepared`` where it is) in one write; when the database refuses it, store each
        half on its own, down to the single batch it cannot store, which is refused with the database's reason."""
        try:
            fresh = (
                self._registry.store_prepared(prepared)
                if prepared is not None
                else self._registry.store_checked(
                    batches, aggregate_window_s=self._aggregate_window_s, shard=self._aggregate_shard
                )
            )
        except _UNAVAILABLE as exc:
            log.warning("database unavailable, %d telemetry batches not stored (devices resend): %s", len(batches), exc)
            return _WriteResult(unstored=len(batches))
        except Exception as exc:
            if len(batches) == 1:
                batch = batches[0].batch
                reason = f"the database refused the batch: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                log.warning("telemetry batch %s of %s rejected: %s", batch.batch_id, batch.device_id, reason)
                return _WriteResult(refused={batch.batch_id: (batch.device_id, reason)})
            half = len(batches) // 2
            first, second = self._store_isolating(batches[:half]), self._store_isolating(batches[half:])
            return _WriteResult(
                first.fresh + second.fresh,
                first.committed + second.committed,
                first.refused | second.refused,
                first.unstored + second.unstored,
            )
        return _WriteResult(fresh, batches)

    def _send_acks(self, committed: list[CheckedBatch], refused: dict[str, tuple[str, str]]) -> None:
        """One `TelemetryAck` per device (and per `MAX_ACK_BATCHES` ids) for what was committed or refused."""
        if self._acknowledge is None:
            return
        stored: dict[str, list[str]] = {}
        for checked in committed:
            stored.setdefault(checked.batch.device_id, []).append(checked.batch.batch_id)
        rejected: dict[str, dict[str, str]] = {}
        for batch_id, (device_id, reason) in refused.items():
            rejected.setdefault(device_id, {})[batch_id] = reason[:500]
        for device_id in stored.keys() | rejected.keys():
            ids = list(dict.fromkeys(stored.get(device_id, [])))
            for start in range(0, max(len(ids), 1), MAX_ACK_BATCHES):
                chunk = ids[start : start + MAX_ACK_BATCHES]
                self._acknowledge(
                    TelemetryAck(
                        device_id=device_id, stored=chunk, rejected=rejected.get(device_id, {}) if start == 0 else {}
                    )
                )
