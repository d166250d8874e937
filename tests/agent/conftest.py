"""Unit-test fixtures for the agent: a tiny real ONNX model, real bundles, and the hub's bundle transfer and TUF
repository answering on the in-memory broker (no network)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from agent.model import ServableModel
from agent.state_store import StateStore
from agent.transfer import ChunkDownloader, MetadataClient
from agent.update import Updater
from agent.verifier import BundleVerifier
from fleet.wire import topics
from fleet.wire.bundle import BundleManifest, TensorSpec
from fleet.wire.messages import DeploymentOrder, FetchRequest, UpdateState, decode
from fleet.wire.transport import InMemoryBroker, Message
from hub.bundles.publish import build_bundle
from hub.bundles.store import ArtifactStore
from hub.bundles.transfer import BundleTransfer
from hub.bundles.tuf_repository import TufRepository

TARGET = "x86-onnx-cpu"
DEVICE = "unit-1"
CHUNK = 256
WEIGHTS = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


def onnx_matmul() -> bytes:
    """A one-node ONNX model: ``output = input @ WEIGHTS`` for inputs of shape (n, 4)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["output"])],
        "matmul",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(WEIGHTS, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


MODEL_BYTES = onnx_matmul()
GOLDEN_X = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
GOLDEN_Y = GOLDEN_X @ WEIGHTS


def manifest(version: str, *, model: str = "m") -> BundleManifest:
    """The tiny model's manifest for ``version``."""
    return BundleManifest(
        model=model,
        version=version,
        target=TARGET,
        runtime="onnxruntime",
        model_file="model.onnx",
        input=TensorSpec(name="input", shape=[-1, 4]),
    )


def bundle_bytes(version: str, *, golden_y: np.ndarray | None = None, model: str = "m") -> bytes:
    """A real bundle of the tiny model; wrong ``golden_y`` makes its health check fail."""
    return build_bundle(
        manifest(version, model=model), MODEL_BYTES, GOLDEN_X, GOLDEN_Y if golden_y is None else golden_y
    )


@dataclass
class MemoryHub:
    """The hub's artifact store, TUF repository and `BundleTransfer` answering fetches on an in-memory broker."""

    root: Path
    broker: InMemoryBroker = field(default_factory=InMemoryBroker)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.store = ArtifactStore(self.root / "store")
        self.tuf = TufRepository(self.root / "tuf")
        self.transfer = BundleTransfer(self.broker, self.store, self.tuf, chunk_size=CHUNK, rebroadcast_window_s=0)
        self.broker.subscribe(topics.device_wildcard("fetch"), self._on_fetch)

    def _on_fetch(self, message: Message) -> None:
        device_id, _ = topics.parse_device_topic(message.topic)
        self.transfer.handle(device_id, decode(FetchRequest, message.payload))

    def publish(self, version: str, *, golden_y: np.ndarray | None = None, model: str = "m") -> DeploymentOrder:
        """Store and sign a bundle of ``version``; return an order for it."""
        data = bundle_bytes(version, golden_y=golden_y, model=model)
        sha = self.store.put_bytes(data)
        tuf_target = f"bundles/{model}/{version}/{TARGET}.zip"
        self.tuf.add_target(tuf_target, data, {"model": model, "version": version, "target": TARGET})
        return self.order(sha, len(data), version=version, model=model, tuf_target=tuf_target)

    def order(
        self, sha: str, size: int, *, version: str, model: str = "m", tuf_target: str = "bundles/x.zip", **extra: object
    ) -> DeploymentOrder:
        """An order for the bundle ``sha`` of ``size`` bytes."""
        return DeploymentOrder(
            deployment_id=f"dep-{next(self._ids)}",
            model=model,
            version=version,
            target=TARGET,
            tuf_target=tuf_target,
            sha256=sha,
            size_bytes=size,
            chunk_size=CHUNK,
            chunk_count=max(1, math.ceil(size / CHUNK)),
            **extra,  # type: ignore[arg-type]
        )


@dataclass
class Device:
    """An agent's update parts on the in-memory broker; ``served`` records what `activate` switched to."""

    hub: MemoryHub
    data_dir: Path
    served: list[ServableModel | None] = field(default_factory=list)
    shadows: list[ServableModel | None] = field(default_factory=list)
    reports: list[tuple[str, UpdateState, bool, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = StateStore(self.data_dir / "state.json")
        self.downloader = ChunkDownloader(self.hub.broker, DEVICE, self.data_dir / "downloads", chunk_timeout_s=0.5)
        self.metadata = MetadataClient(self.hub.broker, DEVICE, timeout_s=2)
        self.verifier = BundleVerifier(self.data_dir / "tuf", self.hub.tuf.trusted_root(), self.metadata.get)
        self.slots_dir = self.data_dir / "slots"
        self.updater = self.restart()

    def restart(self) -> Updater:
        """A fresh `Updater` on the same disk, as after an agent restart."""
        self.updater = Updater(
            StateStore(self.data_dir / "state.json"),
            self.downloader,
            self.verifier,
            self.slots_dir,
            activate=self.served.append,
            activate_shadow=self.shadows.append,
            report=self._report,
            download_timeout_s=5,
        )
        return self.updater

    def _report(
        self, order: DeploymentOrder, state: UpdateState, ok: bool, detail: str, progress: float | None
    ) -> None:
        if progress is None:  # state changes and outcomes, not download progress
            self.reports.append((order.deployment_id, state, ok, detail))


@pytest.fixture
def memory_hub(tmp_path: Path) -> MemoryHub:
    return MemoryHub(tmp_path / "hub")


@pytest.fixture
def device(memory_hub: MemoryHub, tmp_path: Path) -> Device:
    return Device(memory_hub, tmp_path / "device")
