"""Delta downloads: a new version with a retrained head travels as the pieces it changed, installs, and is
still checked whole against TUF; damaged or forged reused pieces never get past the checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from agent.transfer import ChunkDownloader, MetadataClient, sha256_file
from fleet.wire import topics
from fleet.wire.chunk_index import index_name
from fleet.wire.messages import DeploymentOrder, FetchRequest, UpdateState, decode, encode_chunk
from fleet.wire.transport import Handler, Unsubscribe
from hub.bundles.chunking import chunk_index
from hub.bundles.publish import build_bundle
from tests.agent.conftest import DEVICE, Device, MemoryHub, manifest

BODY = np.random.default_rng(1).normal(size=(4, 16384)).astype(np.float32)  # 256 KiB that never changes


def two_layer_onnx(head: np.ndarray) -> bytes:
    """``output = (input @ BODY) @ head``: a frozen body and a classifier head of shape (16384, 1)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "body"], ["hidden"]),
            helper.make_node("MatMul", ["hidden", "head"], ["output"]),
        ],
        "two_layer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(BODY, "body"), numpy_helper.from_array(head, "head")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def head(seed: int) -> np.ndarray:
    """A classifier head as trained from ``seed`` (64 KiB of weights)."""
    return (np.random.default_rng(seed).normal(size=(16384, 1)) / 100).astype(np.float32)


def publish(hub: MemoryHub, version: str, weights: np.ndarray) -> tuple[DeploymentOrder, bytes]:
    """Store and sign a bundle of the two-layer model; return its order and bytes."""
    x = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    data = build_bundle(manifest(version), two_layer_onnx(weights), x, (x @ BODY) @ weights)
    sha = hub.store.put_bytes(data)
    target = f"bundles/m/{version}/x86-onnx-cpu.zip"
    hub.tuf.add_target(target, data, {"model": "m", "version": version, "target": "x86-onnx-cpu"})
    return hub.order(sha, len(data), version=version, tuf_target=target), data


def delta_device(device: Device) -> Device:
    device.downloader.index_source = device.metadata.get
    return device


def fetch_requests(hub: MemoryHub, kind: str) -> list[FetchRequest]:
    fetch = topics.device_topic(DEVICE, "fetch")
    requests = [decode(FetchRequest, m.payload) for m in hub.broker.published if m.topic == fetch]
    return [r for r in requests if r.kind == kind]


def test_a_retrained_head_downloads_only_the_pieces_it_changed_and_installs(
    device: Device, memory_hub: MemoryHub
) -> None:
    delta_device(device)
    first, _ = publish(memory_hub, "1.0.0", head(1))
    assert device.updater.apply(first) is UpdateState.DONE
    assert device.downloader.delta_fetched_bytes == 0  # nothing installed yet: a whole download
    second, data = publish(memory_hub, "2.0.0", head(2))
    before = len(memory_hub.broker.published)
    assert device.updater.apply(second) is UpdateState.DONE
    assert device.updater.state.active is not None and device.updater.state.active.version == "2.0.0"
    index = chunk_index(data)
    requested = {p for r in fetch_requests(memory_hub, "pieces") for p in r.chunks}
    requested_bytes = sum(index.pieces[p].length for p in requested)
    changed = head(2).nbytes
    assert requested_bytes == device.downloader.delta_fetched_bytes
    assert changed <= requested_bytes <= 2 * changed < 0.4 * len(data)  # pieces around the edits travel too
    assert device.downloader.delta_reused_bytes + requested_bytes == len(data)
    assert not any(m.topic == topics.bundle_topic(second.sha256) for m in memory_hub.broker.published[before:])


def test_a_damaged_piece_of_the_installed_bundle_is_fetched_not_reused(device: Device, memory_hub: MemoryHub) -> None:
    delta_device(device)
    first, _ = publish(memory_hub, "1.0.0", head(1))
    assert device.updater.apply(first) is UpdateState.DONE
    slot = Path(device.updater.state.active.path)  # type: ignore[union-attr]
    damaged = bytearray(slot.read_bytes())
    damaged[len(damaged) // 4] ^= 0xFF  # inside the frozen body
    slot.write_bytes(bytes(damaged))
    second, data = publish(memory_hub, "2.0.0", head(2))
    assert device.updater.apply(second) is UpdateState.DONE
    index = chunk_index(data)
    requested = {p for r in fetch_requests(memory_hub, "pieces") for p in r.chunks}
    damaged_at = next(i for i, p in enumerate(index.pieces) if p.offset <= len(damaged) // 4 < p.offset + p.length)
    assert damaged_at in requested


def test_a_tampered_reused_piece_still_fails_tuf_verification(device: Device, memory_hub: MemoryHub) -> None:
    # A forged index and order (say, from a compromised broker) make the device rebuild "2.0.0" entirely from a
    # tampered installed slot; the order's digest matches the forgery, so only TUF stands in the way.
    delta_device(device)
    first, _ = publish(memory_hub, "1.0.0", head(1))
    assert device.updater.apply(first) is UpdateState.DONE
    slot = Path(device.updater.state.active.path)  # type: ignore[union-attr]
    tampered = bytearray(slot.read_bytes())
    tampered[len(tampered) // 4] ^= 0xFF
    slot.write_bytes(bytes(tampered))
    second, _ = publish(memory_hub, "2.0.0", head(2))
    forged_sha = hashlib.sha256(tampered).hexdigest()
    forged_index = chunk_index(bytes(tampered)).encode()
    genuine = device.metadata.get

    def forged_source(name: str) -> bytes | None:
        return forged_index if name in (index_name(forged_sha), index_name(first.sha256)) else genuine(name)

    device.downloader.index_source = forged_source
    forged = second.model_copy(update={"sha256": forged_sha, "size_bytes": len(tampered)})
    assert device.updater.apply(forged) is UpdateState.FAILED
    assert device.downloader.delta_reused_bytes == len(tampered)  # all of it came from the tampered slot
    _, state, ok, detail = device.reports[-1]
    assert state is UpdateState.FAILED and not ok
    assert "does not match its signed length and sha256" in detail
    assert device.updater.state.active is not None and device.updater.state.active.version == "1.0.0"


def test_a_delta_does_not_take_the_retained_chunks_of_the_whole_bundle(
    device: Device, memory_hub: MemoryHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    delta_device(device)
    first, _ = publish(memory_hub, "1.0.0", head(1))
    assert device.updater.apply(first) is UpdateState.DONE
    published, data = publish(memory_hub, "2.0.0", head(2))
    second = published.model_copy(update={"retained_chunks": True})
    for i in range(second.chunk_count):  # the whole bundle, kept by the broker for devices without a base
        chunk = data[i * second.chunk_size : (i + 1) * second.chunk_size]
        memory_hub.broker.publish(
            topics.retained_chunk_topic(second.sha256, i),
            encode_chunk(second.sha256, i, second.chunk_count, chunk),
            retain=True,
        )
    filters: list[str] = []
    subscribe = memory_hub.broker.subscribe

    def recording(topic_filter: str, handler: Handler, *, qos: int = 1) -> Unsubscribe:
        filters.append(topic_filter)
        return subscribe(topic_filter, handler, qos=qos)

    monkeypatch.setattr(memory_hub.broker, "subscribe", recording)
    assert device.updater.apply(second) is UpdateState.DONE
    assert fetch_requests(memory_hub, "pieces") and device.downloader.delta_fetched_bytes < len(data) // 2
    assert topics.retained_chunks_filter(second.sha256) not in filters  # the broker never sent it the whole bundle


def test_without_a_chunk_index_the_whole_bundle_is_downloaded(device: Device, memory_hub: MemoryHub) -> None:
    delta_device(device)
    first, _ = publish(memory_hub, "1.0.0", head(1))
    assert device.updater.apply(first) is UpdateState.DONE
    device.downloader.index_source = lambda _name: None  # a hub from before chunk indexes
    second, _ = publish(memory_hub, "2.0.0", head(2))
    assert device.updater.apply(second) is UpdateState.DONE
    assert not fetch_requests(memory_hub, "pieces") and device.downloader.delta_fetched_bytes == 0
    assert fetch_requests(memory_hub, "chunks")


def test_a_bundle_broadcast_while_a_delta_is_tried_is_kept_when_too_little_is_shared(
    memory_hub: MemoryHub, tmp_path: Path
) -> None:
    order, _ = publish(memory_hub, "2.0.0", head(2))
    base = tmp_path / "installed.zip"
    base.write_bytes(np.random.default_rng(5).bytes(order.size_bytes))  # shares nothing with the new bundle
    base_sha = memory_hub.store.put_bytes(base.read_bytes())
    pushed: list[bool] = []
    metadata = MetadataClient(memory_hub.broker, DEVICE, timeout_s=5)

    def index_source(name: str) -> bytes | None:
        if not pushed:  # another device asks for the whole bundle while this one asks for the indexes
            pushed.append(True)
            chunks = list(range(order.chunk_count))
            memory_hub.transfer.handle(
                "cam-2", FetchRequest(request_id="r", kind="chunks", sha256=order.sha256, chunks=chunks)
            )
        return metadata.get(name)

    downloader = ChunkDownloader(
        memory_hub.broker, DEVICE, tmp_path / "downloads", ask_after_s=30, index_source=index_source
    )
    path = downloader.download(order, timeout_s=60, base=(base_sha, base))
    assert sha256_file(path) == order.sha256
    assert downloader.requests_sent == 0 and downloader.delta_fetched_bytes == 0
