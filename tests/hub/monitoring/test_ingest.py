"""Telemetry ingestion (hub/ingest.py, Registry.store_telemetry/prune_telemetry) on SQLite and PostgreSQL:
validation at the door, only fresh batches observed, concurrent writers (retention: tests/hub/registry/
test_telemetry_retention.py)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from fleet.errors import ProtocolError
from fleet.telemetry_blocks import CheckedBatch
from fleet.wire.messages import Histogram, TelemetryAck, TelemetryBatch
from hub.monitoring.ingest import TelemetryIngestor
from hub.monitoring.metrics import FleetMetrics
from hub.registry import Database, Registry
from tests.hub.monitoring.telemetry_scenario import scenario


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    db = Database(database_url)
    yield Registry(db)
    db.close()


@pytest.fixture(scope="module")
def batches() -> list[TelemetryBatch]:
    return [TelemetryBatch.model_validate(b) for b in scenario()["batches"]]


def _count(metrics: FleetMetrics, result: str) -> float:
    value = metrics.registry.get_sample_value("edgefleet_telemetry_batches_total", {"result": result})
    return value or 0.0


def _requests(metrics: FleetMetrics) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "edgefleet_device_inference_requests_total":
                total += sample.value
    return total


def test_only_fresh_batches_are_observed_and_duplicates_counted(
    registry: Registry, batches: list[TelemetryBatch]
) -> None:
    metrics = FleetMetrics(CollectorRegistry())
    stored: list[TelemetryBatch] = []
    ingestor = TelemetryIngestor(registry, metrics=metrics, on_stored=stored.extend, linger_s=0.01)
    try:
        first = batches[:10]
        for batch in first + first[:4]:  # duplicates inside one write
            ingestor.submit(batch)
        assert ingestor.wait_idle()
        for batch in first[5:] + batches[10:12]:  # redelivery after the first write
            ingestor.submit(batch)
        assert ingestor.wait_idle()
    finally:
        ingestor.close()
    assert registry.telemetry_count() == 12 and ingestor.stored == 12
    assert sorted(b.batch_id for b in stored) == sorted(b.batch_id for b in batches[:12])
    assert ingestor.duplicates == 4 + 5
    assert _count(metrics, "accepted") == 12 and _count(metrics, "duplicate") == 9
    assert _requests(metrics) == sum(b.requests for b in batches[:12])


def test_malformed_batch_is_rejected_counted_and_breaks_nothing(
    registry: Registry, batches: list[TelemetryBatch]
) -> None:
    metrics = FleetMetrics(CollectorRegistry())
    ingestor = TelemetryIngestor(registry, metrics=metrics, linger_s=0.01)
    good = batches[0]
    corrupt_sketch = good.model_copy(update={"batch_id": "bad-sketch", "feature_sketches": {"x": "AAAAAAAAAAAAAAAA"}})
    bad_hist = good.model_copy(
        update={"batch_id": "bad-hist", "latency_ms": good.latency_ms.model_copy(update={"counts": [1, 2]})}
    )
    more_errors = good.model_copy(update={"batch_id": "bad-errors", "errors": good.requests + 1})
    try:
        for bad in (corrupt_sketch, bad_hist, more_errors):
            with pytest.raises(ProtocolError):
                ingestor.submit(bad)
        ingestor.submit(good)
        assert ingestor.wait_stored(1)
    finally:
        ingestor.close()
    assert ingestor.rejected == 3 and _count(metrics, "rejected") == 3
    assert [b.batch_id for b in registry.telemetry_batches()] == [good.batch_id]


def test_concurrent_writers_store_each_batch_exactly_once(database_url: str, batches: list[TelemetryBatch]) -> None:
    """Two hub workers (own engines) writing overlapping batches at once: no batch is lost or stored twice,
    and each is reported fresh by exactly one of them."""
    registries = [Registry(Database(database_url)) for _ in range(2)]
    fresh: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def work(index: int) -> None:
        barrier.wait()
        for start in range(0, len(batches), 6):
            chunk = batches[start : start + 12]  # overlaps the next chunk; both workers write everything
            fresh[index].extend(b.batch_id for b in registries[index].store_telemetry(chunk))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert sorted(fresh[0] + fresh[1]) == sorted(b.batch_id for b in batches)
        assert registries[0].telemetry_count() == len(batches)
    finally:
        for r in registries:
            r.db.close()


def test_a_batch_the_database_refuses_is_rejected_alone_and_the_others_are_stored_and_acknowledged(
    registry: Registry, batches: list[TelemetryBatch]
) -> None:
    """A NaN window end (the schema refuses it, validation does not look: a batch built in process) fails the
    bulk write on both databases; the write is split until the bad batch stands alone, and every device
    hears what became of its batches."""
    metrics = FleetMetrics(CollectorRegistry())
    acks: list[TelemetryAck] = []
    ingestor = TelemetryIngestor(registry, metrics=metrics, acknowledge=acks.append, linger_s=0.5)
    good = batches[:9]
    bad = good[4].model_copy(update={"batch_id": "bad-window-end", "window_end": float("nan")})
    try:
        for batch in [*good[:4], bad, *good[4:]]:  # one write
            ingestor.submit(batch)
        assert ingestor.wait_idle(30)
    finally:
        ingestor.close()
    assert sorted(b.batch_id for b in registry.telemetry_batches()) == sorted(b.batch_id for b in good)
    assert (ingestor.stored, ingestor.rejected) == (9, 1) and _count(metrics, "rejected") == 1
    stored = {batch_id for ack in acks for batch_id in ack.stored}
    assert stored == {b.batch_id for b in good}
    (refusal,) = [ack for ack in acks if ack.rejected]
    assert refusal.device_id == bad.device_id and "database refused" in refusal.rejected["bad-window-end"]
    assert all(len({b.device_id for b in good if b.batch_id in ack.stored}) <= 1 for ack in acks)


def test_acknowledgements_name_duplicates_too_and_come_once_per_device_per_write(
    registry: Registry, batches: list[TelemetryBatch]
) -> None:
    acks: list[TelemetryAck] = []
    ingestor = TelemetryIngestor(registry, acknowledge=acks.append, linger_s=0.5)
    try:
        for batch in batches[:6]:
            ingestor.submit(batch)
        assert ingestor.wait_idle(30)
        first = list(acks)
        acks.clear()
        ingestor.submit(batches[0])  # resent because its acknowledgement was lost
        assert ingestor.wait_idle(30)
    finally:
        ingestor.close()
    devices = {b.device_id for b in batches[:6]}
    assert sorted(a.device_id for a in first) == sorted(devices)
    assert {i for a in first for i in a.stored} == {b.batch_id for b in batches[:6]}
    assert [(a.device_id, a.stored) for a in acks] == [(batches[0].device_id, [batches[0].batch_id])]


def test_a_malformed_batch_is_refused_to_its_device(registry: Registry, batches: list[TelemetryBatch]) -> None:
    acks: list[TelemetryAck] = []
    ingestor = TelemetryIngestor(registry, acknowledge=acks.append)
    odd_edges = batches[0].model_copy(
        update={"batch_id": "odd-edges", "latency_ms": Histogram(edges=[1.0, 2.0], counts=[1, 0, 0], total=1.0)}
    )
    try:
        with pytest.raises(ProtocolError, match="standard"):
            ingestor.submit(odd_edges)
    finally:
        ingestor.close()
    assert [(a.device_id, list(a.rejected)) for a in acks] == [(odd_edges.device_id, ["odd-edges"])]
    assert registry.telemetry_count() == 0


def test_raw_payloads_are_decoded_and_validated_by_the_writer(
    registry: Registry, batches: list[TelemetryBatch]
) -> None:
    """What the MQTT dispatcher hands over undecoded: the writer stores the good batch, refuses the malformed
    one to its device, and the undecodable one is counted through the decoder's rejection listener."""
    from fleet.wire import topics
    from fleet.wire.messages import encode
    from fleet.wire.transport import Message
    from hub.devices.traffic import DeviceTraffic

    good, malformed = (
        batches[0],
        batches[1].model_copy(update={"batch_id": "bad-sketch", "feature_sketches": {"x": "AAAAAAAAAAAAAAAA"}}),
    )
    for device in {good.device_id, malformed.device_id}:
        registry.provision_device(device, good.target)
    traffic = DeviceTraffic(broker=None, registry=registry)  # type: ignore[arg-type]  # decoding only
    acks: list[TelemetryAck] = []
    ingestor = TelemetryIngestor(
        registry, linger_s=0.01, decode=traffic.decode_telemetry_block, acknowledge=acks.append
    )
    traffic.on_rejected(lambda _channel, _exc: ingestor.reject())
    try:
        for batch in (good, malformed):
            ingestor.submit_payload(Message(topics.device_topic(batch.device_id, "telemetry"), encode(batch)))
        ingestor.submit_payload(Message(topics.device_topic(good.device_id, "telemetry"), b"{not json"))
        assert ingestor.wait_idle()
    finally:
        ingestor.close()
    assert registry.telemetry_count() == 1 and ingestor.rejected == 2 and traffic.rejected["telemetry"] == 1
    assert any(a.stored == [good.batch_id] for a in acks)
    assert any("bad-sketch" in a.rejected for a in acks)


def test_close_decodes_and_writes_every_raw_payload_already_queued(
    registry: Registry, batches: list[TelemetryBatch]
) -> None:
    from fleet.wire import topics
    from fleet.wire.messages import encode
    from fleet.wire.transport import Message
    from hub.devices.traffic import DeviceTraffic

    mine = batches[:40]
    for device in sorted({b.device_id for b in mine}):
        registry.provision_device(device, mine[0].target)
    traffic = DeviceTraffic(broker=None, registry=registry)  # type: ignore[arg-type]  # decoding only
    ingestor = TelemetryIngestor(registry, linger_s=0.01, decode=traffic.decode_telemetry_block)
    for batch in mine:
        ingestor.submit_payload(Message(topics.device_topic(batch.device_id, "telemetry"), encode(batch)))
    ingestor.close()
    assert registry.telemetry_count() == len(mine) == ingestor.stored


def test_raw_batches_are_refused_with_the_reasons_validate_batch_gives(
    registry: Registry, batches: list[TelemetryBatch]
) -> None:
    """Raw payloads through the block decoder and checks: each malformed batch is refused to its device with
    the one-line reason `validate_batch` gives it, nothing of it is stored, and the valid ones (one written
    in a way only the reference decoder reads) are stored."""
    import json

    from fleet.telemetry import validate_batch
    from fleet.wire import topics
    from fleet.wire.messages import encode
    from fleet.wire.transport import Message
    from hub.devices.traffic import DeviceTraffic

    good = batches[0]
    sketch = good.feature_sketches[next(iter(good.feature_sketches))]
    raw = bytearray(base64.b64decode(sketch))
    raw[-4:] = b"\x00\x00\xc0\x7f"  # a NaN item
    nan_sketch = {"x": base64.b64encode(raw).decode()}
    malformed = [
        good.model_copy(update={"batch_id": "bad-errors", "errors": good.requests + 1}),
        good.model_copy(update={"batch_id": "bad-window", "window_end": good.window_start - 1}),
        good.model_copy(update={"batch_id": "bad-edges", "latency_ms": Histogram(edges=[1.0], counts=[1, 0])}),
        good.model_copy(update={"batch_id": "bad-nan-sketch", "feature_sketches": nan_sketch}),
        good.model_copy(update={"batch_id": "bad-base64", "feature_sketches": {"x": "not base64!"}}),
    ]
    expected = {}
    for bad in malformed:
        with pytest.raises(ProtocolError) as refusal:
            validate_batch(bad)
        expected[bad.batch_id] = str(refusal.value)
    lax = json.loads(encode(batches[1]))
    lax["requests"] = float(lax["requests"])  # valid, read by the reference decoder only
    for device in {(good.device_id, good.target), (batches[1].device_id, batches[1].target)}:
        registry.provision_device(*device)
    traffic = DeviceTraffic(broker=None, registry=registry)  # type: ignore[arg-type]  # decoding only
    acks: list[TelemetryAck] = []
    ingestor = TelemetryIngestor(
        registry, linger_s=0.01, decode=traffic.decode_telemetry_block, acknowledge=acks.append
    )
    try:
        for bad in malformed:
            ingestor.submit_payload(Message(topics.device_topic(bad.device_id, "telemetry"), encode(bad)))
        ingestor.submit_payload(Message(topics.device_topic(good.device_id, "telemetry"), encode(good)))
        ingestor.submit_payload(
            Message(topics.device_topic(batches[1].device_id, "telemetry"), json.dumps(lax).encode())
        )
        assert ingestor.wait_idle()
    finally:
        ingestor.close()
    refused = {batch_id: reason for ack in acks for batch_id, reason in ack.rejected.items()}
    assert refused == expected
    assert sorted(b.batch_id for b in registry.telemetry_batches()) == sorted([good.batch_id, batches[1].batch_id])
    assert ingestor.rejected == len(malformed) and ingestor.stored == 2


class _HeldRegistry:
    """Stores nothing; holds the first write, and the write prepared while it is held, until released; records
    every write's size and what was prepared while the first write was held."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.prepared_while_held: list[str] = []
        self.second_prepared = threading.Event()

    def prepare_checked(self, batches: list[CheckedBatch], **_: object) -> list[CheckedBatch]:
        if self.entered.is_set() and not self.release.is_set():
            self.prepared_while_held += [c.batch.batch_id for c in batches]
            self.second_prepared.set()
            assert self.release.wait(30)
        return list(batches)

    def store_prepared(self, batches: list[CheckedBatch]) -> list[CheckedBatch]:
        self.sizes.append(len(batches))
        if len(self.sizes) == 1:
            self.entered.set()
            assert self.release.wait(30)
        return list(batches)


def test_the_next_write_is_prepared_during_this_one_and_a_backlog_goes_in_writes_of_up_to_2000(
    batches: list[TelemetryBatch],
) -> None:
    """The next write's rows and aggregates are computed while the current write's transaction runs, not after
    it. Each write has costs of its own (a transaction, a fold per window aggregate): a writer that fell behind
    catches up in writes of up to 2,000 batches, not 500 (998 here: the write queue holds 1,000 submissions)."""
    registry = _HeldRegistry()
    ingestor = TelemetryIngestor(registry, linger_s=0.1)  # type: ignore[arg-type]  # a stand-in registry
    backlog = [batches[i % len(batches)].model_copy(update={"batch_id": f"backlog-{i:05d}"}) for i in range(1000)]
    try:
        ingestor.submit(backlog[0])
        assert registry.entered.wait(30)  # the first write is under way
        ingestor.submit(backlog[1])
        assert registry.second_prepared.wait(30)  # ... and the next is being prepared: the rest queues
        for batch in backlog[2:]:
            ingestor.submit(batch)
        registry.release.set()
        assert ingestor.wait_idle(30)
    finally:
        registry.release.set()
        ingestor.close()
    assert registry.prepared_while_held == [backlog[1].batch_id]
    assert registry.sizes == [1, 1, 998]
