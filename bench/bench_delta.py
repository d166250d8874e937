"""Delta updates: bytes a device downloads for a new version that changed part of the model, over the bytes
that changed. Writes bench/results/delta.json.

Cases: the digits CNN (bench_quantization's `BenchCNN`) with a retrained classifier head, the same CNN with
only its last layer retrained, and a 4-layer transformer encoder (`BenchEncoder`) with one retrained layer.
Models are built here with torch (retraining is simulated by new weights for those parameters, so nothing is
downloaded) and exported to ONNX with `converters.onnx_export.export_onnx`; bundles are the hub's own
(`build_bundle`). The device is the agent's real `ChunkDownloader` holding the previous bundle, the hub the
real `BundleTransfer`, on the in-memory broker: the byte counts do not depend on the broker.

``downloaded_bytes`` is every payload the device received for the update (both chunk indexes and the piece
frames with their headers). ``changed_bytes`` is what a perfect per-tensor delta would send: the raw bytes of
the retrained parameters plus every other bundle member whose content changed (manifest, self-test vectors).

    .venv/bin/python bench/bench_delta.py

Goal (issue 13): download_over_changed <= 1.3 for the retrained head and the retrained encoder layer.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_quantization import BenchCNN, BenchEncoder  # noqa: E402

from agent.transfer import ChunkDownloader, MetadataClient  # noqa: E402
from converters.onnx_export import export_onnx  # noqa: E402
from fleet.wire import topics  # noqa: E402
from fleet.wire.bundle import BundleManifest, TensorSpec  # noqa: E402
from fleet.wire.messages import DeploymentOrder, FetchRequest, decode  # noqa: E402
from fleet.wire.transport import InMemoryBroker, Message  # noqa: E402
from hub.bundles.publish import build_bundle  # noqa: E402
from hub.bundles.store import ArtifactStore  # noqa: E402
from hub.bundles.transfer import BundleTransfer  # noqa: E402
from hub.bundles.tuf_repository import TufRepository  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "delta.json"
DEVICE = "delta-1"
CHUNK = 64 * 1024


def retrain(model: nn.Module, part: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` whose parameters in ``part`` (a submodule of ``model``) have new values."""
    names = {id(p) for p in part.parameters()}
    new = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for old_param, new_param in zip(model.parameters(), new.parameters(), strict=True):
            if id(old_param) in names:
                new_param.add_(torch.randn(new_param.shape, generator=generator) * 0.01)
    return new


def bundle(model: nn.Module, example: torch.Tensor, version: str, input_name: str, work: Path) -> bytes:
    """The hub's bundle of ``model`` exported to ONNX, with self-test vectors computed by torch."""
    out = export_onnx(model.eval(), (example,), work / f"{version}.onnx", input_names=(input_name,))
    with torch.no_grad():
        outputs = model(example).numpy()
    manifest = BundleManifest(
        model="bench",
        version=version,
        target="x86-onnx-cpu",
        runtime="onnxruntime",
        model_file="model.onnx",
        input=TensorSpec(name=input_name, shape=[-1, *example.shape[1:]], dtype=str(example.numpy().dtype)),
    )
    return build_bundle(manifest, out.read_bytes(), example.numpy(), outputs)


def changed_bytes(old: nn.Module, new: nn.Module, old_bundle: bytes, new_bundle: bytes) -> int:
    """Bytes of the retrained parameters plus every non-model bundle member that changed."""
    tensors = sum(
        a.numel() * a.element_size()
        for a, b in zip(old.state_dict().values(), new.state_dict().values(), strict=True)
        if not torch.equal(a, b)
    )
    members = 0
    with zipfile.ZipFile(_io(old_bundle)) as before, zipfile.ZipFile(_io(new_bundle)) as after:
        for info in after.infolist():
            if info.filename != "model.onnx" and after.read(info.filename) != before.read(info.filename):
                members += info.compress_size
    return tensors + members


def _io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def delta_download(old_bundle: bytes, new_bundle: bytes, work: Path) -> dict[str, int]:
    """Run the agent's delta download of ``new_bundle`` from a device holding ``old_bundle``; count bytes."""
    broker = InMemoryBroker()
    store = ArtifactStore(work / "store")
    transfer = BundleTransfer(broker, store, TufRepository(work / "tuf"), chunk_size=CHUNK, rebroadcast_window_s=0)
    old_sha, new_sha = store.put_bytes(old_bundle), store.put_bytes(new_bundle)

    def on_fetch(message: Message) -> None:
        transfer.handle(topics.parse_device_topic(message.topic)[0], decode(FetchRequest, message.payload))

    received = {"bytes": 0}

    def count(message: Message) -> None:
        received["bytes"] += len(message.payload)

    broker.subscribe(topics.device_wildcard("fetch"), on_fetch)
    broker.subscribe(topics.device_topic(DEVICE, "meta"), count)
    broker.subscribe(topics.bundle_pieces_topic(new_sha), count)
    broker.subscribe(topics.bundle_topic(new_sha), count)
    base = work / "installed.zip"
    base.write_bytes(old_bundle)
    metadata = MetadataClient(broker, DEVICE, timeout_s=30)
    downloader = ChunkDownloader(broker, DEVICE, work / "downloads", chunk_timeout_s=5, index_source=metadata.get)
    order = DeploymentOrder(
        deployment_id="delta",
        model="bench",
        version="2",
        target="x86-onnx-cpu",
        tuf_target="bundles/bench/2/x86-onnx-cpu.zip",
        sha256=new_sha,
        size_bytes=len(new_bundle),
        chunk_size=CHUNK,
        chunk_count=math.ceil(len(new_bundle) / CHUNK),
    )
    path = downloader.download(order, timeout_s=120, base=(old_sha, base))
    assert path.read_bytes() == new_bundle
    return {
        "downloaded_bytes": received["bytes"],
        "piece_bytes": downloader.delta_fetched_bytes,
        "reused_bytes": downloader.delta_reused_bytes,
    }


def case(name: str, model: nn.Module, part: nn.Module, example: torch.Tensor, input_name: str) -> dict[str, Any]:
    """One delta case: export both versions, bundle them, download the second from the first."""
    torch.manual_seed(0)
    new = retrain(model, part, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old_bundle = bundle(model, example, "1", input_name, work)
        new_bundle = bundle(new, example, "2", input_name, work)
        changed = changed_bytes(model, new, old_bundle, new_bundle)
        counts = delta_download(old_bundle, new_bundle, work)
    result = {
        "case": name,
        "bundle_bytes": len(new_bundle),
        "changed_bytes": changed,
        **counts,
        "download_over_changed": round(counts["downloaded_bytes"] / changed, 3),
        "download_over_bundle": round(counts["downloaded_bytes"] / len(new_bundle), 3),
    }
    print(json.dumps(result))
    return result


def main() -> None:
    torch.manual_seed(0)
    cnn = BenchCNN().eval()
    digits = torch.rand(4, 1, 32, 32)
    encoder = BenchEncoder().eval()
    tokens = torch.randint(0, BenchEncoder.vocab, (4, 32))
    cases = [
        case("cnn_retrained_head", cnn, cnn.head, digits, "input"),
        case("cnn_retrained_last_layer", cnn, cnn.head[-1], digits, "input"),
        case("encoder_retrained_layer", encoder, encoder.encoder.layers[-1], tokens, "input_ids"),
    ]
    goal_cases = [c for c in cases if c["case"] != "cnn_retrained_last_layer"]
    report = {
        "bench": "delta",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "goal": "download_over_changed <= 1.3 (retrained head, retrained encoder layer)",
        "download_over_changed": max(c["download_over_changed"] for c in goal_cases),
        "goal_met": all(c["download_over_changed"] <= 1.3 for c in goal_cases),
        "cases": cases,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "cases"}, indent=2))


if __name__ == "__main__":
    main()
