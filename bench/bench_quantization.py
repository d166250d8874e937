"""int8 vs fp32 per runtime (ONNX Runtime, OpenVINO, LiteRT) on a CNN and two transformer encoders.

Writes bench/results/quantization.json. Goal (issues 3 and 17): int8 at least 3.5x smaller and 1.5x
faster than fp32 on this CPU, within 1 accuracy point. Models are trained here on offline data (sklearn
digits upsampled to 32x32; a synthetic token-classification task), so nothing is downloaded. The
MiniLM-sized encoder (6 layers, width 384, sequence 128) is a `transformers` BERT built from a config
with random weights; only its classification head is trained, on mean-pooled features of the synthetic
task, so its accuracy is a real accuracy on held-out labels.

    .venv/bin/python bench/bench_quantization.py [--threads 2] [--models minilm_encoder] [--readme]

``--models`` runs a subset and keeps the other models' results already in the JSON; ``--readme``
prints the README rows and the table of docs/converters.md from the JSON. For ONNX Runtime the JSON
also holds the time per operator type from ONNX Runtime's profiler (fp32 and int8), and, where int8
is below 1.5x, the reason read from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
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


class MiniLMEncoder(nn.Module):
    """A MiniLM-sized BERT encoder (random weights) with mean pooling and a linear head."""

    vocab, length, width = 2048, 128, 384

    def __init__(self) -> None:
        from transformers import BertConfig, BertModel

        super().__init__()
        config = BertConfig(
            vocab_size=self.vocab,
            hidden_size=self.width,
            num_hidden_layers=6,
            num_attention_heads=12,
            intermediate_size=4 * self.width,
            max_position_embeddings=self.length,
        )
        torch.manual_seed(0)
        self.bert = BertModel(config, add_pooling_layer=False).eval()
        self.head = nn.Linear(self.width, 4)

    def features(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids).last_hidden_state.mean(1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(input_ids))


def minilm_case() -> tuple[nn.Module, tuple[torch.Tensor], Dataset, Dataset, dict[str, str]]:
    """Sequences of 128 random token ids where a quarter are the label's keywords (16 per label); the
    head is a logistic regression fitted on the frozen encoder's mean-pooled features."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    count, length, keywords = 600, MiniLMEncoder.length, 16
    labels = rng.integers(0, 4, size=count).astype(np.int64)
    ids = rng.integers(4 * keywords, MiniLMEncoder.vocab, size=(count, length))
    planted = rng.random((count, length)) < 0.25
    ids = np.where(planted, labels[:, None] * keywords + rng.integers(0, keywords, size=(count, length)), ids)
    ids = ids.astype(np.int64)
    model = MiniLMEncoder().eval()
    with torch.no_grad():
        features = torch.cat([model.features(torch.from_numpy(ids[i : i + 50])) for i in range(0, 400, 50)]).numpy()
    mean, std = features.mean(0), features.std(0) + 1e-6
    fitted = LogisticRegression(max_iter=2000).fit((features - mean) / std, labels[:400])
    with torch.no_grad():  # fold the standardisation into the head
        model.head.weight.copy_(torch.from_numpy(fitted.coef_ / std).float())
        model.head.bias.copy_(torch.from_numpy(fitted.intercept_ - (fitted.coef_ / std) @ mean).float())
    return (
        model.eval(),
        (torch.from_numpy(ids[:1]),),
        Dataset({"input_ids": ids[:32]}),
        Dataset({"input_ids": ids[400:]}, labels[400:]),
        {"input_ids": f"int64[1,{length}]"},
    )


def cpu_flags() -> dict[str, bool]:
    """The int8 dot-product instruction sets of this CPU (VNNI makes int8 MatMuls pay)."""
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {flag: flag in flags for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}


def load_average() -> dict[str, object]:
    """The host's load now: ``uptime`` and the 1/5/15-minute load averages."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    return {"uptime": uptime, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def paired_latency(
    target: str,
    fp32: object,
    int8: object,
    report: object,
    sample: dict,
    rounds: int = 7,
    runs: int = 40,
    threads: int | None = None,
) -> dict[str, float]:
    """Median over rounds of each variant's p50, alternating fp32 and int8 so both see the same load;
    same thread count for both, each warmed up first; a slow model gets fewer runs per round (about
    0.5 s of fp32, at least 5)."""
    from converters.measure import WARMUP
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
        runners[label] = load_runner(get_target(target), artifact, threads=threads or torch.get_num_threads())
        for _ in range(WARMUP.get(artifact.format, 5)):
            runners[label](sample)
    tick = time.perf_counter()
    runners["fp32"](sample)
    runs = int(min(runs, max(5, 0.5 / (time.perf_counter() - tick))))
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


# operator types whose work int8 quantizes (in fp32 and int8 spelling, after ONNX Runtime's fusions)
INT8_OPS = ("MatMul", "Gemm", "FusedMatMul", "Attention", "Gather", "Conv", "FusedConv")


def ort_op_profile(path: Path, sample: dict, threads: int, runs: int = 20) -> dict[str, float]:
    """Milliseconds per run spent in each operator type (ONNX Runtime's profiler, kernel events, after
    warm-up), largest first: which kernels a variant uses and where its time goes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    warmup = 5
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {i.name: sample[i.name] for i in session.get_inputs()}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    timed_from = starts[warmup]  # kernel events of the warm-up runs are left out
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= timed_from:
            totals[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    return {op: round(ms, 3) for op, ms in sorted(totals.items(), key=lambda kv: -kv[1])}


def ort_reason(profile: dict[str, dict[str, float]], speedup: float) -> str:
    """Why ONNX Runtime int8 stays below 1.5x, read from the per-operator profile (Amdahl's law)."""
    fp32, int8 = profile["fp32"], profile["int8"]
    fp32_total, int8_total = sum(fp32.values()), sum(int8.values())
    quantizable = sum(ms for op, ms in fp32.items() if op in INT8_OPS)
    quantized = {op: ms for op, ms in int8.items() if "Integer" in op or op.startswith(("Q", "DynamicQuantize"))}
    floating = {op: ms for op, ms in int8.items() if op not in quantized}
    top_float = ", ".join(f"{op} {ms:.2f} ms" for op, ms in list(floating.items())[:4])
    return (
        f"{speedup}x: fp32 spends {quantizable:.1f} of {fp32_total:.1f} ms per run in the operators int8 "
        f"replaces ({', '.join(INT8_OPS)}); int8 spends {sum(quantized.values()):.1f} ms in its int8 kernels "
        f"({', '.join(quantized)}) and {sum(floating.values()):.1f} of {int8_total:.1f} ms in operators that "
        f"stay float ({top_float})"
    )


def run_case(name: str, case: tuple, threads: int, workdir: Path) -> dict:
    model, example, calib, evaluation, inputs = case
    names = tuple(inputs)
    load_before = load_average()
    started = time.perf_counter()
    cpu_started = time.process_time()
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
        measure_budget_s=4.0,
        keep_going=True,
        max_accuracy_drop=0.01,
        max_trials=6,
    )
    result: dict = {
        "measured_on": dt.date.today().isoformat(),
        "load_before": load_before,
        "inputs": inputs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "source_accuracy": report.source_accuracy,
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds_this_process": round(time.process_time() - cpu_started, 1),
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
        entry["int8"]["scheme"] = scheme(int8.pipeline)
        entry["int8"]["search_trials"] = len(int8.search.trials) if int8.search else 0
        entry["int8"]["search"] = [
            {"scheme": scheme(t.pipeline), "quality_loss": t.quality_loss, "latency_ms_p50": t.latency_ms_p50}
            for t in (int8.search.trials if int8.search else [])
        ]
        if "fusion" in fp32.meta:
            entry["fusion"] = fp32.meta["fusion"]
        if fp32.size_bytes and int8.size_bytes and fp32.executed and int8.executed:
            paired = paired_latency(target, fp32, int8, report, evaluation.sample(0))
            entry["paired_latency_ms_p50"] = paired
            # one thread: no thread pool waiting on a descheduled worker, so a loaded host slows fp32
            # and int8 alike and the ratio shows the kernels
            single = paired_latency(target, fp32, int8, report, evaluation.sample(0), threads=1)
            entry["paired_latency_ms_p50_1_thread"] = single
            entry["speedup_p50_1_thread"] = round(single["fp32"] / single["int8"], 2)
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
            if runtime == "onnxruntime":
                sample = evaluation.sample(0)
                profile = {
                    label: ort_op_profile(report.artifact_path(v), sample, threads)
                    for label, v in (("fp32", fp32), ("int8", int8))
                }
                entry["ort_op_profile_ms_per_run"] = profile
                if speedup < 1.5:
                    entry["below_goal_reason"] = ort_reason(profile, round(speedup, 2))
        result["runtimes"][runtime] = entry
    result["load_after"] = load_average()
    return result


def scheme(pipeline: list[dict]) -> str:
    """A short name for the int8 scheme of a pipeline (its quantization step, and fusion if any)."""
    types = [step["type"] for step in pipeline]
    step = pipeline[-1]
    fused = "fused, " if "transformer_optimize" in types else ""
    matmul_only = ", MatMul only" if list(step.get("op_types", ())) == ["MatMul"] else ""
    if step["type"] == "int8_dynamic":
        channel = "per-channel" if step["per_channel"] else "per-tensor"
        return f"{fused}dynamic{matmul_only or ', all operators'}, {channel}"
    if step["type"] == "int8_static":
        return f"{fused}static QDQ{matmul_only}, {step['activation_type']} activations"
    if step["type"] == "nncf_ptq":
        return "NNCF, transformer scheme" if step["transformer"] else "NNCF, default scheme"
    if step["type"] == "litert_int8":
        return "dynamic range" if step.get("mode") == "dynamic_range" else "full integer"
    return step["type"]


CASES = {"cnn": cnn_case, "transformer_encoder": encoder_case, "minilm_encoder": minilm_case}
LABELS = {
    "cnn": "CNN",
    "transformer_encoder": "transformer encoder (4 layers, width 192, seq 64)",
    "minilm_encoder": "MiniLM-sized encoder (6 layers, width 384, seq 128)",
}
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "litert": "LiteRT"}


def readme_rows(results: dict) -> list[str]:
    """The README's "Measured on this machine" int8 rows, one per model, from the results JSON."""
    rows = []
    for name, model in results["models"].items():
        parts = []
        for runtime, entry in model["runtimes"].items():
            if "speedup_p50" not in entry:
                parts.append(f"{RUNTIME_NAMES[runtime]} not measured ({entry['int8']['status']})")
                continue
            one_thread = f" ({entry['speedup_p50_1_thread']}x at 1 thread)" if "speedup_p50_1_thread" in entry else ""
            parts.append(
                f"{RUNTIME_NAMES[runtime]} {entry['size_ratio']}x smaller, {entry['speedup_p50']}x faster{one_thread}, "
                f"{entry['accuracy_drop_points']:g} pt accuracy drop"
            )
        if "load_before" in model:
            before, after = model["load_before"]["loadavg"][0], model["load_after"]["loadavg"][0]
            parts[-1] += f" (batch 1, 2 threads, load average {before} → {after})"
        rows.append(f"| int8 vs fp32, {LABELS[name]} | {'; '.join(parts)} | `bench_quantization.py` |")
    return rows


SHORT = {"cnn": "CNN", "transformer_encoder": "encoder", "minilm_encoder": "MiniLM-sized"}
TIMES, MINUS = "\u00d7", "\u2212"  # the docs table's typography


def docs_rows(results: dict) -> list[str]:
    """The rows of docs/converters.md's int8 table, from the results JSON."""
    rows = []
    for name, model in results["models"].items():
        for runtime, entry in model["runtimes"].items():
            if "speedup_p50" not in entry:
                rows.append(f"| {SHORT[name]} | {RUNTIME_NAMES[runtime]} | not measured ({entry['int8']['status']}) |")
                continue
            fp32, int8, paired = entry["fp32"], entry["int8"], entry["paired_latency_ms_p50"]
            drop = entry["accuracy_drop_points"]
            drop_text = f"{drop:g} pt".replace("-", MINUS) if drop else "0"
            sizes = f"{fp32['size_bytes'] / 1e6:.2f} MB → {int8['size_bytes'] / 1e6:.2f} MB"
            label = int8.get("scheme") or scheme(int8["pipeline"])
            rows.append(
                f"| {SHORT[name]} | {RUNTIME_NAMES[runtime]} ({label}) | {sizes} | "
                f"{entry['size_ratio']}{TIMES} | "
                f"{paired['fp32']:.3g} → {paired['int8']:.3g} | {entry['speedup_p50']}{TIMES} | {drop_text} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--readme", action="store_true", help="print the README rows from the JSON and exit")
    args = parser.parse_args()
    if args.readme:
        results = json.loads(RESULTS.read_text())
        print("\n".join(["README.md:", *readme_rows(results), "", "docs/converters.md:", *docs_rows(results)]))
        return
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}")
    torch.set_num_threads(args.threads)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results = {
        "host": {
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "cpu_flags": cpu_flags(),
            "load_at_start": load_average(),
        },
        "latency": "batch 1; speedup_p50 uses paired_latency_ms_p50: fp32 and int8 timed in alternating rounds "
        "(7 rounds of 40 runs, fewer for slow models but at least 5; median of round medians) so both see the "
        "same load on a shared host",
        "models": {k: v for k, v in previous.get("models", {}).items() if k in CASES and k not in names},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            build = CASES[name]
            print(f"[bench] {name} ...", flush=True)
            results["models"][name] = run_case(name, build(), args.threads, Path(tmp))
            print(json.dumps(results["models"][name]["runtimes"], indent=1), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
