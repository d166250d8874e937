"""`BundleTransfer`: chunks go to the bundle's broadcast topic once per window; requests it cannot serve are
refused to the asking device with the reason; metadata replies say found or not."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import numpy as np
import pytest

from fleet.errors import ProtocolError
from fleet.wire import topics
from fleet.wire.chunk_index import ChunkIndex, index_name
from fleet.wire.messages import FetchRefused, FetchRequest, MetadataReply, decode, decode_chunk
from fleet.wire.transport import InMemoryBroker
from hub.bundles.chunking import chunk_index
from hub.bundles.store import ArtifactStore
from hub.bundles.transfer import BundleTransfer
from hub.bundles.tuf_repository import TufRepository
from tests.waiting import wait_until

DEVICE = "cam-1"


@pytest.fixture
def parts(tmp_path: Path) -> tuple[InMemoryBroker, ArtifactStore, BundleTransfer]:
    broker = InMemoryBroker()
    store = ArtifactStore(tmp_path / "store")
    transfer = BundleTransfer(broker, store, TufRepository(tmp_path / "tuf"), chunk_size=4, rebroadcast_window_s=60)
    return broker, store, transfer


def _chunks(sha: str, chunks: list[int]) -> FetchRequest:
    return FetchRequest(request_id="r1", kind="chunks", sha256=sha, chunks=chunks)


def test_requested_chunks_are_broadcast_once_per_window(
    parts: tuple[InMemoryBroker, ArtifactStore, BundleTransfer],
) -> None:
    broker, store, transfer = parts
    sha = store.put_bytes(b"0123456789")
    transfer.handle(DEVICE, _chunks(sha, [2, 0, 0]))
    transfer.handle("cam-2", _chunks(sha, [0, 1]))
    frames = [decode_chunk(m.payload) for m in broker.published]
    assert all(m.topic == topics.bundle_topic(sha) for m in broker.published)
    assert [(f.index, f.count, f.data) for f in frames] == [(0, 3, b"0123"), (2, 3, b"89"), (1, 3, b"4567")]
    assert transfer.egress_bytes == sum(len(m.payload) for m in broker.published)


def test_an_unknown_bundle_is_refused_to_the_asking_device(
    parts: tuple[InMemoryBroker, ArtifactStore, BundleTransfer],
) -> None:
    broker, _, transfer = parts
    transfer.handle(DEVICE, _chunks("ab" * 32, [0]))
    [message] = broker.published
    assert message.topic == topics.device_topic(DEVICE, "refused")
    refusal = decode(FetchRefused, message.payload)
    assert (refusal.request_id, refusal.sha256) == ("r1", "ab" * 32)
    assert refusal.reason == f"the hub has no bundle {'ab' * 32}"


def test_a_chunk_past_the_end_is_refused_and_nothing_is_sent(
    parts: tuple[InMemoryBroker, ArtifactStore, BundleTransfer],
) -> None:
    broker, store, transfer = parts
    sha = store.put_bytes(b"0123456789")
    transfer.handle(DEVICE, _chunks(sha, [1, 7]))
    [message] = broker.published
    assert decode(FetchRefused, message.payload).reason == "chunk 7 out of range: bundle has 3 chunks"


def test_a_chunk_request_without_a_digest_is_a_protocol_error(
    parts: tuple[InMemoryBroker, ArtifactStore, BundleTransfer],
) -> None:
    _, _, transfer = parts
    with pytest.raises(ProtocolError, match="without sha256"):
        transfer.handle(DEVICE, FetchRequest(request_id="r1", kind="chunks"))


def test_metadata_replies_carry_the_file_or_found_false(
    parts: tuple[InMemoryBroker, ArtifactStore, BundleTransfer],
) -> None:
    broker, _, transfer = parts
    transfer.handle(DEVICE, FetchRequest(request_id="r1", kind="metadata", name="1.root.json"))
    transfer.handle(DEVICE, FetchRequest(request_id="r2", kind="metadata", name="9.root.json"))
    found, missing = (decode(MetadataReply, m.payload) for m in broker.published)
    assert found.found and base64.b64decode(found.data_b64) == transfer.tuf.trusted_root()
    assert not missing.found and missing.data_b64 == ""
    assert {m.topic for m in broker.published} == {topics.device_topic(DEVICE, "meta")}


def test_the_chunk_index_is_served_by_its_metadata_name(
    parts: tuple[InMemoryBroker, ArtifactStore, BundleTransfer],
) -> None:
    broker, store, transfer = parts
    data = bytes(range(256)) * 200
    sha = store.put_bytes(data)
    transfer.handle(DEVICE, FetchRequest(request_id="r1", kind="metadata", name=index_name(sha)))
    transfer.handle(DEVICE, FetchRequest(request_id="r2", kind="metadata", name=index_name("ef" * 32)))
    found, missing = (decode(MetadataReply, m.payload) for m in broker.published)
    assert ChunkIndex.decode(base64.b64decode(found.data_b64)) == chunk_index(data)
    assert not missing.found


def test_requested_pieces_are_broadcast_once_per_window_on_the_pieces_topic(
    parts: tuple[InMemoryBroker, ArtifactStore, BundleTransfer],
) -> None:
    broker, store, transfer = parts
    data = np.random.default_rng(0).bytes(100_000)
    sha = store.put_bytes(data)
    index = chunk_index(data)
    transfer.handle(DEVICE, FetchRequest(request_id="r1", kind="pieces", sha256=sha, chunks=[1, 0]))
    transfer.handle("cam-2", FetchRequest(request_id="r2", kind="pieces", sha256=sha, chunks=[0]))
    assert {m.topic for m in broker.published} == {topics.bundle_pieces_topic(sha)}
    frames = [decode_chunk(m.payload) for m in broker.published]
    assert [f.index for f in frames] == [0, 1] and {f.count for f in frames} == {len(index.pieces)}
    assert [f.data for f in frames] == [data[p.offset : p.offset + p.length] for p in index.pieces[:2]]


def test_pieces_past_the_index_or_of_an_unknown_bundle_are_refused(
    parts: tuple[InMemoryBroker, ArtifactStore, BundleTransfer],
) -> None:
    broker, store, transfer = parts
    sha = store.put_bytes(b"small")
    transfer.handle(DEVICE, FetchRequest(request_id="r1", kind="pieces", sha256=sha, chunks=[1]))
    transfer.handle(DEVICE, FetchRequest(request_id="r2", kind="pieces", sha256="ef" * 32, chunks=[0]))
    reasons = [decode(FetchRefused, m.payload).reason for m in broker.published]
    assert reasons == ["pieces [1] out of range for the index", f"the hub has no bundle {'ef' * 32}"]


def test_requests_within_the_gather_delay_share_one_broadcast(tmp_path: Path) -> None:
    broker, store = InMemoryBroker(), ArtifactStore(tmp_path / "store")
    transfer = BundleTransfer(broker, store, TufRepository(tmp_path / "tuf"), chunk_size=4, gather_s=600)
    sha = store.put_bytes(b"0123456789")
    for device in ("cam-1", "cam-2", "cam-3"):
        transfer.handle(device, _chunks(sha, [0, 1, 2]))
    assert broker.published == []  # a wave's devices are still subscribing
    transfer.close()  # sends what is gathered
    assert [decode_chunk(m.payload).index for m in broker.published] == [0, 1, 2]
    assert transfer.broadcasts == 3


def test_gathered_chunks_go_out_when_the_delay_ends(tmp_path: Path) -> None:
    broker, store = InMemoryBroker(), ArtifactStore(tmp_path / "store")
    transfer = BundleTransfer(broker, store, TufRepository(tmp_path / "tuf"), chunk_size=4, gather_s=0.05)
    sha = store.put_bytes(b"0123456789")
    sent = threading.Event()
    broker.subscribe(topics.bundle_topic(sha), lambda _m: sent.set())
    transfer.handle(DEVICE, _chunks(sha, [1]))
    assert sent.wait(10)
    transfer.close()
    assert transfer.broadcasts == 1


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_late_joiners_share_one_repair_when_the_window_ends(tmp_path: Path) -> None:
    broker, store, clock = InMemoryBroker(), ArtifactStore(tmp_path / "store"), Clock()
    transfer = BundleTransfer(
        broker, store, TufRepository(tmp_path / "tuf"), chunk_size=4, rebroadcast_window_s=2, clock=clock
    )
    sha = store.put_bytes(b"0123456789")
    transfer.handle(DEVICE, _chunks(sha, [0, 1, 2]))
    assert transfer.broadcasts == 3
    clock.now += 0.5
    for late in ("cam-2", "cam-3", "cam-4"):  # subscribed after the broadcast: each lacks chunk 1 or all
        transfer.handle(late, _chunks(sha, [1] if late == "cam-2" else [0, 1, 2]))
    assert transfer.broadcasts == 3  # not resent within the repair window, nor dropped:
    clock.now += 2
    transfer.close()  # (what the sender thread does once the window ends)
    assert [decode_chunk(m.payload).index for m in broker.published] == [0, 1, 2, 0, 1, 2]


def test_a_wave_is_broadcast_once_all_its_devices_asked(tmp_path: Path) -> None:
    broker, store = InMemoryBroker(), ArtifactStore(tmp_path / "store")
    transfer = BundleTransfer(
        broker, store, TufRepository(tmp_path / "tuf"), chunk_size=4, gather_s=600, rebroadcast_window_s=600
    )
    sha = store.put_bytes(b"0123456789")
    sent = threading.Event()
    broker.subscribe(topics.bundle_topic(sha), lambda _m: sent.set())
    transfer.push(sha, ["cam-1", "cam-2", "cam-3"])  # about to be ordered: not listening yet
    transfer.handle("cam-1", _chunks(sha, [0, 1, 2]))
    transfer.handle("cam-2", _chunks(sha, [0, 1, 2]))
    assert not sent.is_set()  # cam-3 is still subscribing
    transfer.handle("cam-3", _chunks(sha, [0, 1, 2]))  # the last one: out now, not after the gather delay
    assert sent.wait(10)
    assert wait_until(lambda: transfer.broadcasts == 3, 10)
    transfer.handle("cam-4", _chunks(sha, [0, 1, 2]))  # after the wave: a late joiner, served by a repair
    assert transfer.broadcasts == 3
    transfer.close()


def test_a_wave_with_a_silent_device_goes_out_when_its_wait_ends(tmp_path: Path) -> None:
    broker, store = InMemoryBroker(), ArtifactStore(tmp_path / "store")
    transfer = BundleTransfer(
        broker, store, TufRepository(tmp_path / "tuf"), chunk_size=4, gather_s=600, wave_wait_s=0.05
    )
    sha = store.put_bytes(b"0123456789")
    sent = threading.Event()
    broker.subscribe(topics.bundle_topic(sha), lambda _m: sent.set())
    transfer.push(sha, ["cam-1", "silent"])
    transfer.handle("cam-1", _chunks(sha, [0, 1, 2]))
    assert sent.wait(10)  # wave_wait_s after the push, not gather_s after the request
    transfer.push("ef" * 32, ["cam-1"])  # a wave nobody asks for sends nothing
    transfer.close()
    assert transfer.broadcasts == 3
