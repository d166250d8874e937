"""Delta updates end to end on real brokers (embedded and Mosquitto): a device holding version 1 receives a
version 2 with a retrained head as a fraction of the bundle, verifies it whole with TUF and serves it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fleet.wire.bundle import Preprocess
from hub.bundles.publish import PublishedVariant
from tests.integration.fleet_harness import Harness, manifest_for

BODY = np.random.default_rng(1).normal(size=(64, 4096)).astype(np.float32) / 8  # 1 MiB that never changes


def _onnx(head: np.ndarray, path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "body"], ["hidden"]),
            helper.make_node("MatMul", ["hidden", "head"], ["output"]),
        ],
        "body_and_head",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 10])],
        [numpy_helper.from_array(BODY, "body"), numpy_helper.from_array(head, "head")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _publish(harness: Harness, version: str, seed: int) -> PublishedVariant:
    head = (np.random.default_rng(seed).normal(size=(4096, 10)) / 64).astype(np.float32)  # 160 KiB
    manifest = manifest_for(harness.trained, version).model_copy(update={"preprocess": Preprocess()})
    x = harness.trained.golden_x.astype(np.float32)
    model = _onnx(head, harness.root / f"delta-{version}.onnx")
    return harness.hub.publish(manifest, model, x, (x @ BODY) @ head)


def test_a_retrained_head_travels_as_a_fraction_of_the_bundle_and_installs(harness: Harness) -> None:
    agent = harness.agent("delta")
    _publish(harness, "1.0.0", seed=1)
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    transfer, updater = harness.hub.transfer, agent.updater
    assert transfer is not None and updater is not None
    before = transfer.egress_bytes
    second = _publish(harness, "2.0.0", seed=2)
    assert set(harness.deploy("2.0.0", [agent]).values()) == {"done"}
    bundle = harness.hub.store.size(second.bundle_sha256)
    fetched = updater.downloader.delta_fetched_bytes
    assert 160 * 1024 <= fetched < 0.25 * bundle, (fetched, bundle)
    assert transfer.egress_bytes - before < 0.35 * bundle  # pieces, both chunk indexes and TUF metadata
    x = harness.trained.test_x[:4]
    assert agent.service.predict(x.tolist())["version"] == "2.0.0"
