"""Measure a variant on this host: load time, batch-1 latency p50/p99, throughput, resident memory.

Each variant is measured in a fresh Python process (`measure_isolated`), so runtimes do not share
thread pools, allocator caches or warm-up state, and ``peak_memory_mb`` is the runtime's own resident
growth: the child imports the runtime library first, takes its RSS as the baseline, then loads the
variant and runs it; the peak RSS above that baseline (sampled every 5 ms, and at the end) is
reported. Every runtime gets the same thread count (``threads``) and its own warm-up (`WARMUP`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ExecutionError
from converters.runners import RunnerFn
from converters.types import Artifact
from targets import Target

# Runs before timing starts: TorchScript's profiling executor re-optimizes over its first runs.
WARMUP = {"torchscript": 20, "openvino": 5, "onnx": 5, "tflite": 5, "coreml": 5}
_RUNTIME_IMPORTS = {
    "onnx": "onnxruntime",
    "openvino": "openvino",
    "tflite": "ai_edge_litert.interpreter",
    "torchscript": "torch",
    "coreml": "coremltools",
}


class _PeakRSS:
    """Samples this process's resident memory every few milliseconds in a background thread."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process(os.getpid())
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def measure(
    load: Callable[[], RunnerFn],
    sample: Mapping[str, np.ndarray],
    *,
    warmup: int = 5,
    max_runs: int = 200,
    budget_s: float = 2.0,
) -> dict[str, Any]:
    """Load once (timed), warm up, then time batch-1 runs until ``max_runs`` or ``budget_s``.

    ``peak_memory_mb`` is the largest increase of this process's RSS over the load and the runs.
    Whatever the runner reports in its ``info`` mapping (e.g. OpenVINO's inference precision) is added.
    """
    with _PeakRSS() as memory:
        start = time.perf_counter()
        runner = load()
        load_ms = (time.perf_counter() - start) * 1000
        for _ in range(warmup):
            runner(sample)
        timings: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(timings) < max_runs and (len(timings) < 20 or time.perf_counter() < deadline):
            tick = time.perf_counter()
            runner(sample)
            timings.append((time.perf_counter() - tick) * 1000)
    values = np.asarray(timings)
    return {
        "load_time_ms": round(load_ms, 3),
        "latency_ms_p50": round(float(np.percentile(values, 50)), 4),
        "latency_ms_p99": round(float(np.percentile(values, 99)), 4),
        "throughput_per_s": round(1000.0 * len(values) / float(values.sum()), 2),
        "peak_memory_mb": round((memory.peak - memory.baseline) / 2**20, 2),
        "runs": len(values),
        "warmup_runs": warmup,
        **dict(getattr(runner, "info", {})),
    }


def measure_isolated(
    target: Target, artifact: Artifact, sample: Mapping[str, np.ndarray], *, threads: int, budget_s: float
) -> dict[str, Any]:
    """`measure` the variant in a fresh Python process (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="measure-") as scratch:
        job = Path(scratch) / "job.json"
        np.savez(Path(scratch) / "sample.npz", **dict(sample))  # type: ignore[arg-type]
        job.write_text(
            json.dumps(
                {
                    "target": target.name,
                    "artifact": {
                        "root": str(artifact.root),
                        "main": artifact.main,
                        "format": artifact.format,
                        "precision": artifact.precision,
                        "files": list(artifact.files),
                        "meta": dict(artifact.meta),
                    },
                    "sample": str(Path(scratch) / "sample.npz"),
                    "threads": threads,
                    "budget_s": budget_s,
                },
                default=str,
            )
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_root(), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(
            [sys.executable, "-m", "converters.measure", str(job)], capture_output=True, text=True, env=env
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise ExecutionError(f"measuring {artifact.path.name} failed: {tail}", target=target.name, stage="measure")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _root() -> str:
    return str(Path(__file__).resolve().parents[1])


def _child(job_path: str) -> None:
    import importlib

    job = json.loads(Path(job_path).read_text())
    spec = job["artifact"]
    artifact = Artifact(
        Path(spec["root"]), spec["main"], spec["format"], spec["precision"], tuple(spec["files"]), spec["meta"]
    )
    importlib.import_module(_RUNTIME_IMPORTS[artifact.format])  # the library is not the model's memory
    if artifact.format == "torchscript":
        import torch

        torch.set_num_threads(job["threads"])
        torch.set_num_interop_threads(1)
    from converters.runners import load_runner
    from targets import get_target

    with np.load(job["sample"]) as archive:
        sample = {k: archive[k] for k in archive.files}
    target = get_target(job["target"])
    result = measure(
        lambda: load_runner(target, artifact, job["threads"]),
        sample,
        warmup=WARMUP.get(artifact.format, 5),
        budget_s=job["budget_s"],
    )
    print(json.dumps(result))


if __name__ == "__main__":
    _child(sys.argv[1])
