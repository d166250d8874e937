"""Agent request overhead: `InferenceService.predict` (validation, pre-processing, model, answers, telemetry
with 64 feature sketches) against the bare model call (`ServableModel.predict`), batch 1, on two models:
the demo digits classifier and a small transformer encoder (4 layers, width 192, sequence 64).

The two calls alternate request by request (swapping which goes first), so both see the same machine
load; the overhead is the difference of the p50s, reported over the model's own p50. The mean is reported
too: it includes the sketch updates, which run once per block of requests
(`agent.telemetry.SKETCH_FLUSH_ROWS`) and so are amortised out of the p50.

Writes bench/results/agent_predict.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent.bundle import read_bundle
from agent.inference import InferenceService
from agent.model import ServableModel
from agent.telemetry import TelemetryCollector
from fleet.wire.bundle import BundleManifest, Postprocess, SelfTest, TensorSpec
from hub.bundles.publish import build_bundle
from hub.demo.model import digits_manifest, train_digits

REPEATS = {"digits": 5000, "encoder": 1000}
SEQ, WIDTH, LAYERS, HEADS = 64, 192, 4, 4


def _servable(root: Path, manifest: BundleManifest, onnx: bytes, golden_x: np.ndarray, golden_y: np.ndarray) -> Any:
    path = root / f"{manifest.model}.zip"
    path.write_bytes(build_bundle(manifest, onnx, golden_x, golden_y))
    return ServableModel(read_bundle(path), "0" * 64)


def _digits(root: Path) -> tuple[ServableModel, np.ndarray]:
    trained = train_digits(root, epochs=5)
    model = _servable(
        root, digits_manifest(trained, "1.0.0"), trained.onnx_path.read_bytes(), trained.golden_x, trained.golden_logits
    )
    return model, trained.test_x[:200]


def _encoder(root: Path) -> tuple[ServableModel, np.ndarray]:
    """A transformer encoder classifying a sequence of 64 scalars (untrained: only its cost matters)."""
    import torch

    from converters import export_onnx

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Linear(1, WIDTH)
            self.position = torch.nn.Parameter(torch.randn(SEQ, WIDTH) * 0.02)
            layer = torch.nn.TransformerEncoderLayer(WIDTH, HEADS, 4 * WIDTH, dropout=0.0, batch_first=True)
            self.encoder = torch.nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
            self.head = torch.nn.Linear(WIDTH, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(self.embed(x.unsqueeze(-1)) + self.position)
            return self.head(hidden.mean(dim=1))

    torch.manual_seed(0)
    module = Encoder().eval()
    onnx = export_onnx(module, (torch.zeros(1, SEQ),), root / "encoder.onnx")
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(200, SEQ)).astype(np.float32)
    with torch.no_grad():
        golden = module(torch.from_numpy(inputs[:4])).numpy()
    manifest = BundleManifest(
        model="encoder",
        version="1.0.0",
        target="x86-onnx-cpu",
        runtime="onnxruntime",
        precision="fp32",
        model_file="model.onnx",
        input=TensorSpec(name="input", dtype="float32", shape=[-1, SEQ]),
        postprocess=Postprocess(labels=[str(i) for i in range(10)]),
        selftest=SelfTest(atol=1e-3, rtol=1e-3),
        feature_names=[f"t{i}" for i in range(SEQ)],
        created_at=time.time(),
    )
    return _servable(root, manifest, onnx.read_bytes(), inputs[:4], golden), inputs


def _paired(
    bare: Callable[[Any], object], full: Callable[[Any], object], inputs: list[list[float]], repeats: int
) -> tuple[np.ndarray, np.ndarray]:
    """Times of the two calls, alternating on the same inputs (microseconds)."""
    bare_us, full_us = np.empty(repeats), np.empty(repeats)
    clock = time.perf_counter
    for i in range(repeats):
        row = inputs[i % len(inputs)]
        first, second = (bare, full) if i % 2 else (full, bare)  # neither always runs on the other's warm caches
        start = clock()
        first(row)
        middle = clock()
        second(row)
        end = clock()
        bare_us[i], full_us[i] = (middle - start, end - middle) if i % 2 else (end - middle, middle - start)
    return bare_us * 1e6, full_us * 1e6


def _measure(model: ServableModel, rows: np.ndarray, repeats: int) -> dict[str, float]:
    service = InferenceService(TelemetryCollector("bench", "x86-onnx-cpu"))
    service.activate(model)
    inputs = [row.tolist() for row in rows]
    for row in inputs * 3:  # warm up, crossing a few sketch blocks
        model.predict(row)
        service.predict(row)
    bare, full = _paired(model.predict, service.predict, inputs, repeats)
    (batch,) = service.collector.drain()
    assert batch.requests == 3 * len(inputs) + repeats and len(batch.feature_sketches) == rows.shape[1]
    model_p50, full_p50 = float(np.median(bare)), float(np.median(full))
    return {
        "model_only_us_p50": model_p50,
        "predict_with_telemetry_us_p50": full_p50,
        "telemetry_overhead_us_p50": full_p50 - model_p50,
        "overhead_over_model_p50": (full_p50 - model_p50) / model_p50,
        "model_only_us_mean": float(bare.mean()),
        "predict_with_telemetry_us_mean": float(full.mean()),
        "overhead_over_model_mean": float((full.mean() - bare.mean()) / bare.mean()),
        "predict_with_telemetry_us_p99": float(np.percentile(full, 99)),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = {"digits": _digits(root), "encoder": _encoder(root)}
    result: dict[str, Any] = {
        "benchmark": "agent_predict",
        "batch": 1,
        "repeats": REPEATS,
        "features_sketched": 64,
        "encoder_shape": {"layers": LAYERS, "width": WIDTH, "sequence": SEQ, "heads": HEADS},
        "goal": {"digits_overhead_over_model_p50": 0.5, "encoder_overhead_over_model_p50": 0.05},
    }
    for name, (model, rows) in models.items():
        result[name] = _measure(model, rows, REPEATS[name])
    out = Path("bench/results/agent_predict.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
