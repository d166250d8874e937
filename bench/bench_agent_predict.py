"""Agent request overhead: `InferenceService.predict` (pre-processing, model, answers, telemetry with
64 feature sketches) against the bare model call, batch 1, on the demo digits model.

Writes bench/results/agent_predict.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from agent.bundle import read_bundle
from agent.inference import InferenceService
from agent.model import ServableModel
from agent.telemetry import TelemetryCollector
from hub.bundles.publish import build_bundle
from hub.demo.model import digits_manifest, train_digits


def _p50_us(func, inputs: list[list[float]], repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        func(inputs[i % len(inputs)])
        times.append((time.perf_counter() - start) * 1e6)
    return float(np.median(times))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trained = train_digits(root, epochs=5)
        bundle = root / "bundle.zip"
        bundle.write_bytes(
            build_bundle(
                digits_manifest(trained, "1.0.0"),
                trained.onnx_path.read_bytes(),
                trained.golden_x,
                trained.golden_logits,
            )
        )
        model = ServableModel(read_bundle(bundle), "0" * 64)
    service = InferenceService(TelemetryCollector("bench", "x86-onnx-cpu"))
    service.activate(model)
    inputs = [row.tolist() for row in trained.test_x[:200]]
    for row in inputs:  # warm up
        service.predict(row)
    repeats = 3000
    result = {
        "benchmark": "agent_predict",
        "batch": 1,
        "repeats": repeats,
        "features_sketched": 64,
        "model_only_us_p50": _p50_us(model.predict, inputs, repeats),
        "predict_with_telemetry_us_p50": _p50_us(service.predict, inputs, repeats),
    }
    result["telemetry_overhead_us_p50"] = result["predict_with_telemetry_us_p50"] - result["model_only_us_p50"]
    out = Path("bench/results/agent_predict.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
