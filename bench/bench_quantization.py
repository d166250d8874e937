"""int8 vs fp32 per runtime (ONNX Runtime, OpenVINO, LiteRT) on a CNN and a transformer encoder.

Writes bench/results/quantization.json. Goal (issue 3): int8 at least 3.5x smaller and 1.5x faster than
fp32 on this CPU, within 1 accuracy point. Models are trained here on offline data (sklearn digits
upsampled to 32x32; a synthetic token-classification task), so nothing is downloaded.

    .venv/bin/python bench/bench_quantization.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters.convert import convert
from converters.data import Dataset

RESULTS = Path(__file__).resolve().parent / "results" / "quantization.json"
TARGETS = {"onnxruntime": "x86-onnx-cpu", "openvino": "intel-openvino", "litert": "rpi4-arm64"}


class BenchCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(128, 128, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(256 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BenchEncoder(nn.Module):
    vocab = 512

    def __init__(self, dim: int = 192, layers: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(self.vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, dim * 4, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encoder(self.embed(input_ids))).mean(1))


def _fit(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> nn.Module:
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 64):
            idx = order[start : start + 64]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            optimiser.step()
    return model.eval()


def cnn_case() -> tuple[nn.Module, tuple[torch.Tensor], Dataset, Dataset, dict[str, str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.nn.functional.interpolate(
        torch.from_numpy(digits.images[:, None] / 16.0).float(), size=32, mode="bilinear"
    ).numpy()
    labels = digits.target.astype(np.int64)
    model = _fit(BenchCNN(), images[:1400], labels[:1400], epochs=3, lr=1e-3)
    return (
        model,
        (torch.from_numpy(images[:1]),),
        Dataset({"input": images[:200]}),
        Dataset({"input": images[1400:]}, labels[1400:]),
        {"input": "float32[1,1,32,32]"},
    )


def encoder_case() -> tuple[nn.Module, tuple[torch.Tensor], Dataset, Dataset, dict[str, str]]:
    """Token-id sequences where 40% of the tokens come from the label's quarter of the vocabulary."""
    rng = np.random.default_rng(0)
    count, length, quarter = 2400, 64, BenchEncoder.vocab // 4
    labels = rng.integers(0, 4, size=count).astype(np.int64)
    ids = rng.integers(0, BenchEncoder.vocab, size=(count, length))
    planted = rng.random((count, length)) < 0.4
    ids = np.where(planted, labels[:, None] * quarter + rng.integers(0, quarter, size=(count, length)), ids)
    ids = ids.astype(np.int64)
    model = _fit(BenchEncoder(), ids[:2000], labels[:2000], epochs=2, lr=1e-3)
    return (
        model,
        (torch.from_numpy(ids[:1]),),
        Dataset({"input_ids": ids[:200]}),
        Dataset({"input_ids": ids[2000:]}, labels[2000:]),
        {"input_ids": "int64[1,64]"},
    )


def paired_latency(
    target: str, fp32: object, int8: object, report: object, sample: dict, rounds: int = 7, runs: int = 40
) -> dict[str, float]:
    """Median over rounds of each variant's p50, alternating fp32 and int8 so both see the same load."""
    from converters.runners import load_runner
    from converters.types import Artifact
    from targets import get_target

    runners = {}
    for label, variant in (("fp32", fp32), ("int8", int8)):
        path = report.artifact_path(variant)  # type: ignore[attr-defined]
        artifact = Artifact(
            path.parent,
            path.name,
            variant.format,
            variant.precision,
            (path.name,),  # type: ignore[attr-defined]
            variant.meta,
        )  # type: ignore[attr-defined]
        runners[label] = load_runner(get_target(target), artifact, threads=torch.get_num_threads())
        for _ in range(5):
            runners[label](sample)
    medians: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(rounds):
        for label, runner in runners.items():
            times = []
            for _ in range(runs):
                tick = time.perf_counter()
                runner(sample)
                times.append((time.perf_counter() - tick) * 1000)
            medians[label].append(float(np.median(times)))
    return {label: round(float(np.median(values)), 4) for label, values in medians.items()}


def run_case(name: str, case: tuple, threads: int, workdir: Path) -> dict:
    model, example, calib, evaluation, inputs = case
    names = tuple(inputs)
    started = time.perf_counter()
    report = convert(
        model,
        list(TARGETS.values()),
        workdir / name,
        example_inputs=example,
        input_names=names,
        calib=calib,
        eval=evaluation,
        precisions=["int8", "fp32"],
        threads=threads,
        measure_budget_s=2.0,
        keep_going=True,
        max_accuracy_drop=0.01,
        max_trials=4,
    )
    result: dict = {
        "inputs": inputs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "source_accuracy": report.source_accuracy,
        "seconds": round(time.perf_counter() - started, 1),
        "runtimes": {},
    }
    for runtime, target in TARGETS.items():
        fp32, int8 = report.variant(target, "fp32"), report.variant(target, "int8")
        entry = {"target": target}
        for label, v in (("fp32", fp32), ("int8", int8)):
            entry[label] = {
                "status": v.status,
                "size_bytes": v.size_bytes,
                "latency_ms_p50": v.latency_ms_p50,
                "latency_ms_p99": v.latency_ms_p99,
                "accuracy": v.accuracy,
                "top1_agreement": v.top1_agreement,
                "error": v.error.message if v.error else None,
            }
        entry["int8"]["pipeline"] = int8.pipeline
        entry["int8"]["search_trials"] = len(int8.search.trials) if int8.search else 0
        if fp32.size_bytes and int8.size_bytes and fp32.executed and int8.executed:
            paired = paired_latency(target, fp32, int8, report, evaluation.sample(0))
            entry["paired_latency_ms_p50"] = paired
            size_ratio = fp32.size_bytes / int8.size_bytes
            speedup = paired["fp32"] / paired["int8"]
            drop = (fp32.accuracy or 0) - (int8.accuracy or 0)
            entry.update(
                size_ratio=round(size_ratio, 2),
                speedup_p50=round(speedup, 2),
                accuracy_drop_points=round(100 * drop, 2),
                goal={
                    "smaller_3_5x": size_ratio >= 3.5,
                    "faster_1_5x": speedup >= 1.5,
                    "within_1_point": drop <= 0.01 + 1e-9,
                },
            )
        result["runtimes"][runtime] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "host": {
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "latency": "batch 1; speedup_p50 uses paired_latency_ms_p50: fp32 and int8 timed in alternating rounds "
        "(7 x 40 runs, median of round medians) so both see the same load on a shared host",
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (("cnn", cnn_case), ("transformer_encoder", encoder_case)):
            print(f"[bench] {name} ...", flush=True)
            results["models"][name] = run_case(name, build(), args.threads, Path(tmp))
            print(json.dumps(results["models"][name]["runtimes"], indent=1), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
