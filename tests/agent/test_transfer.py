"""Bundle download: resumes from a partial file, re-asks for corrupt chunks, times out, stops on a full disk
or a hub refusal (removing its partial files); takes retained chunks from the broker before asking for any."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

import agent.transfer as transfer
import hub.bundles.transfer as hub_transfer
from agent.errors import StorageError, TransferError
from agent.transfer import BundleDownload, ChunkDownloader, metadata_waits, sha256_file
from fleet.wire import topics
from fleet.wire.messages import DeploymentOrder, FetchRequest, decode, encode_chunk
from fleet.wire.mqtt import BrokerAddress
from fleet.wire.transport import InMemoryBroker
from tests.agent.conftest import CHUNK, DEVICE, MemoryHub, bundle_bytes
from tests.integration.nats_cluster import NATS_SERVER, NatsCluster
from tests.mqtt_broker import clear_retained, device_client, hub_client, retained_order, unique_device_id
from tests.waiting import wait_until


def _downloader(broker: InMemoryBroker, tmp_path: Path, **kwargs: float) -> ChunkDownloader:
    return ChunkDownloader(broker, DEVICE, tmp_path / "downloads", chunk_timeout_s=kwargs.get("chunk_timeout_s", 0.5))


def _chunk_requests(broker: InMemoryBroker) -> list[list[int]]:
    fetch = topics.device_topic(DEVICE, "fetch")
    return [decode(FetchRequest, m.payload).chunks for m in broker.published if m.topic == fetch]


def test_resumes_from_a_partial_file_asking_only_for_missing_chunks(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    data = memory_hub.store.path(order.sha256).read_bytes()
    assert order.chunk_count >= 3
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    partial = bytearray(order.size_bytes)
    partial[:CHUNK] = data[:CHUNK]
    (downloads / f"{order.sha256}.part").write_bytes(bytes(partial))
    (downloads / f"{order.sha256}.have").write_text(json.dumps({"have": [0], "chunk_size": CHUNK}))
    path = _downloader(memory_hub.broker, tmp_path).download(order, timeout_s=5)
    assert sha256_file(path) == order.sha256
    assert _chunk_requests(memory_hub.broker) == [list(range(1, order.chunk_count))]
    assert not (downloads / f"{order.sha256}.have").exists()


def test_a_bitmap_for_another_chunk_size_is_ignored(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    job = BundleDownload(order, tmp_path)
    (tmp_path / f"{order.sha256}.part").write_bytes(b"\0" * order.size_bytes)
    (tmp_path / f"{order.sha256}.have").write_text(json.dumps({"have": [0, 1], "chunk_size": CHUNK * 2}))
    job.prepare()
    assert job.missing() == list(range(order.chunk_count))


def test_a_corrupt_chunk_is_dropped_and_asked_for_again(
    memory_hub: MemoryHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = memory_hub.publish("1.0.0")
    corrupted: list[int] = []

    def corrupt_first(sha256: str, index: int, count: int, data: bytes) -> bytes:
        frame = encode_chunk(sha256, index, count, data)
        if corrupted:
            return frame
        corrupted.append(index)
        return frame[:-1] + bytes([frame[-1] ^ 0xFF])

    monkeypatch.setattr(hub_transfer, "encode_chunk", corrupt_first)
    downloader = _downloader(memory_hub.broker, tmp_path, chunk_timeout_s=0.05)
    path = downloader.download(order, timeout_s=5)
    assert sha256_file(path) == order.sha256 and downloader.corrupt_chunks == 1
    assert _chunk_requests(memory_hub.broker)[1] == corrupted


def test_times_out_naming_the_missing_chunks_and_keeps_the_partial_file(tmp_path: Path) -> None:
    silent = InMemoryBroker()  # no hub answers
    order = MemoryHub(tmp_path / "hub").order("ab" * 32, 3 * CHUNK, version="1.0.0")
    downloader = _downloader(silent, tmp_path, chunk_timeout_s=0.05)
    with pytest.raises(TransferError, match=r"timed out after 0 s with 3 of 3 chunks missing"):
        downloader.download(order, timeout_s=0.2)
    assert (downloader.directory / f"{order.sha256}.part").exists()  # a later try resumes from it
    assert len(_chunk_requests(silent)) >= 2  # asked again after each quiet spell


def test_a_full_disk_stops_the_download_with_enospc_and_removes_partial_files(
    memory_hub: MemoryHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = memory_hub.publish("1.0.0")

    def no_space(_path: Path, _offset: int, _data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transfer, "_write_chunk", no_space)
    downloader = _downloader(memory_hub.broker, tmp_path)
    with pytest.raises(StorageError, match=r"cannot write chunk 0 to .*: ENOSPC \(No space left on device\)"):
        downloader.download(order, timeout_s=5)
    assert list(downloader.directory.iterdir()) == []


def test_a_hub_refusal_ends_the_download_at_once(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.order("cd" * 32, 4 * CHUNK, version="1.0.0")
    downloader = _downloader(memory_hub.broker, tmp_path, chunk_timeout_s=30)
    with pytest.raises(TransferError, match="the hub refused bundle cdcdcdcdcdcd: the hub has no bundle"):
        downloader.download(order, timeout_s=60)
    assert downloader.requests_sent == 1 and list(downloader.directory.iterdir()) == []


def test_a_refusal_for_another_bundle_is_ignored(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    job = BundleDownload(order, tmp_path)
    other = memory_hub.order("cd" * 32, 10, version="1.0.0")
    memory_hub.broker.subscribe(topics.device_topic(DEVICE, "refused"), job.on_refused)
    memory_hub.transfer.handle(DEVICE, FetchRequest(request_id="r1", kind="chunks", sha256=other.sha256, chunks=[0]))
    assert job.failure is None


def test_an_existing_complete_download_is_reused(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    downloader = _downloader(memory_hub.broker, tmp_path)
    downloader.final_path(order.sha256).write_bytes(bundle_bytes("1.0.0"))
    assert downloader.download(order, timeout_s=5) == downloader.final_path(order.sha256)
    assert downloader.requests_sent == 0


def test_chunks_another_device_asked_for_arrive_without_a_request(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    downloader = ChunkDownloader(memory_hub.broker, DEVICE, tmp_path / "downloads", ask_after_s=30)
    done: list[Path] = []
    thread = threading.Thread(target=lambda: done.append(downloader.download(order, timeout_s=60)))
    thread.start()
    bundle_topic = topics.bundle_topic(order.sha256)
    assert wait_until(lambda: any(f == bundle_topic for f, _ in memory_hub.broker._handlers), 10)
    everything = list(range(order.chunk_count))
    memory_hub.transfer.handle(
        "cam-2", FetchRequest(request_id="r", kind="chunks", sha256=order.sha256, chunks=everything)
    )
    thread.join(30)
    assert done and sha256_file(done[0]) == order.sha256 and downloader.requests_sent == 0


def test_without_a_push_the_device_asks_once_ask_after_passes(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    downloader = ChunkDownloader(memory_hub.broker, DEVICE, tmp_path / "downloads", ask_after_s=0.05)
    assert sha256_file(downloader.download(order, timeout_s=30)) == order.sha256
    assert downloader.requests_sent == 1


def test_metadata_requests_wait_longer_each_time_within_the_timeout() -> None:
    waits = metadata_waits(60.0, 4)
    assert waits == pytest.approx([4.0, 8.0, 16.0, 32.0])  # a swamped hub is asked again less and less often
    assert sum(waits) == pytest.approx(60.0)


# -- retained chunks --------------------------------------------------------------------------------------------


def _retained_order(hub: MemoryHub, version: str = "1.0.0") -> tuple[DeploymentOrder, bytes]:
    """A published bundle's order with ``retained_chunks``, and the bundle's bytes."""
    published = hub.publish(version)
    order = hub.order(published.sha256, published.size_bytes, version=version, retained_chunks=True)
    return order, hub.store.path(order.sha256).read_bytes()


def _retain(broker: InMemoryBroker, order: DeploymentOrder, data: bytes, indexes: Iterable[int]) -> list[str]:
    """Publish chunks ``indexes`` retained on their retained topics, as the hub does; return the topics."""
    retained = []
    for index in indexes:
        topic = topics.retained_chunk_topic(order.sha256, index)
        chunk = data[index * order.chunk_size : (index + 1) * order.chunk_size]
        broker.publish(topic, encode_chunk(order.sha256, index, order.chunk_count, chunk), qos=1, retain=True)
        retained.append(topic)
    return retained


def test_every_chunk_retained_completes_without_a_request(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order, data = _retained_order(memory_hub)
    _retain(memory_hub.broker, order, data, range(order.chunk_count))
    downloader = _downloader(memory_hub.broker, tmp_path, chunk_timeout_s=30)  # a request would wait 30 s
    assert sha256_file(downloader.download(order, timeout_s=60)) == order.sha256
    assert downloader.requests_sent == 0 and _chunk_requests(memory_hub.broker) == []
    assert not [f for f, _ in memory_hub.broker._handlers if "/bundles/" in f]  # retained filter unsubscribed too


def test_a_chunk_missing_from_the_retained_ones_is_asked_for_alone(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order, data = _retained_order(memory_hub)
    assert order.chunk_count >= 3
    _retain(memory_hub.broker, order, data, (i for i in range(order.chunk_count) if i != 1))
    downloader = _downloader(memory_hub.broker, tmp_path, chunk_timeout_s=0.05)
    assert sha256_file(downloader.download(order, timeout_s=30)) == order.sha256
    assert _chunk_requests(memory_hub.broker) == [[1]]  # after the retained ones stopped, only what they lacked


def test_a_resumed_download_takes_the_rest_from_retained_chunks(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order, data = _retained_order(memory_hub)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / f"{order.sha256}.part").write_bytes(data[:CHUNK] + bytes(order.size_bytes - CHUNK))
    (downloads / f"{order.sha256}.have").write_text(json.dumps({"have": [0], "chunk_size": CHUNK}))
    _retain(memory_hub.broker, order, data, range(1, order.chunk_count))  # all but the chunk held
    downloader = _downloader(memory_hub.broker, tmp_path, chunk_timeout_s=30)
    assert sha256_file(downloader.download(order, timeout_s=60)) == order.sha256
    assert downloader.requests_sent == 0


def test_a_cleared_retained_chunk_is_not_counted_as_corrupt(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order, data = _retained_order(memory_hub)
    job = BundleDownload(order, tmp_path)
    job.prepare()
    memory_hub.broker.subscribe(topics.retained_chunks_filter(order.sha256), job.on_chunk)
    (topic,) = _retain(memory_hub.broker, order, data, [0])
    memory_hub.broker.publish(topic, b"", retain=True)  # the hub clears it: subscribers get an empty payload
    assert job.have == {0} and job.corrupt_chunks == 0


def test_retained_chunks_on_a_real_broker_need_no_request(mqtt_address: BrokerAddress, tmp_path: Path) -> None:
    _download_retained(mqtt_address, tmp_path)


def test_retained_chunks_on_nats_need_no_request(tmp_path: Path) -> None:
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip("nats-server is not installed (.ci/run installs the Debian package nats-server)")
    (tmp_path / "nats").mkdir()
    node = NatsCluster(tmp_path / "nats", size=1)  # MQTT's retained messages live in a JetStream stream here
    node.start()
    try:
        _download_retained(BrokerAddress.from_url(node.url(0)), tmp_path)
    finally:
        node.stop()


def _download_retained(address: BrokerAddress, tmp_path: Path) -> None:
    """The hub keeps a bundle's chunks retained; a device downloads it from them without asking."""
    data = os.urandom(5 * CHUNK + 17)  # a digest no earlier run left retained on Mosquitto
    sha = hashlib.sha256(data).hexdigest()
    order = retained_order(data, CHUNK)
    hub = hub_client(address)
    device_id = unique_device_id()
    device = device_client(address, device_id)
    retained = [topics.retained_chunk_topic(sha, i) for i in range(order.chunk_count)]
    try:
        for index, topic in enumerate(retained):
            frame = encode_chunk(sha, index, order.chunk_count, data[index * CHUNK : (index + 1) * CHUNK])
            assert hub.publish_and_wait(topic, frame, retain=True, timeout_s=30)  # kept before the device asks
        downloader = ChunkDownloader(device, device_id, tmp_path / "downloads", chunk_timeout_s=10)
        assert sha256_file(downloader.download(order, timeout_s=30)) == sha
        assert downloader.requests_sent == 0
    finally:
        device.close()
        clear_retained(hub, retained)
        hub.close()
