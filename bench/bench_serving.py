"""Serving benchmark: dynamic batching against one-request-at-a-time on the same model, same server, same run.

A server process (the ``edgefleet serve`` app) loads one ONNX MLP twice: ``batched`` (dynamic batching,
max batch 32) and ``single`` (max batch 1: each request runs alone). A closed-loop load generator in this
process keeps ``--concurrency`` V2 JSON requests in flight against each model in turn (alternating rounds)
and records throughput and latency percentiles. Writes bench/results/serving.json.

    .venv/bin/python bench/bench_serving.py [--concurrency 32] [--seconds 8] [--rounds 2]

Goal (issue 7): batched throughput >= 3x single at an equal or better p99.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "serving.json"
DIMS = (512, 4096, 4096, 4096, 16)  # ~140 MB of fp32 weights: a "heavy" model, memory-bound at batch 1
MODES: dict[str, dict[str, Any]] = {
    "batched": {"max_batch_size": 32, "max_queue_delay_ms": 2.0, "max_queue_size": 4096},
    "single": {"max_batch_size": 1, "max_queue_delay_ms": 0.0, "max_queue_size": 4096},
}


def build_model(path: Path, dims: tuple[int, ...] = DIMS) -> None:
    """An MLP (MatMul/Add/Relu) with a dynamic batch dimension, written with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, prev = [], [], "x"
    layers = list(itertools.pairwise(dims))
    for i, (fan_in, fan_out) in enumerate(layers):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        weights += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(fan_out, np.float32), f"b{i}"),
        ]
        last = i == len(layers) - 1
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], ["y" if last else f"a{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dims[-1]])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def serve(config: Path, port: int) -> None:
    """Server mode (run in a child process): the same app ``edgefleet serve --config`` builds."""
    import uvicorn
    from prometheus_client import CollectorRegistry

    from hub.serving import ServingConfig, create_app

    specs = ServingConfig.model_validate_json(config.read_text()).models
    uvicorn.run(create_app(specs, registry=CollectorRegistry()), host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if (await client.get(f"{base}/v2/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("server not ready in time")


class _Connection:
    """A minimal HTTP/1.1 keep-alive client connection: the load generator must stay cheaper than the
    server it measures (a general-purpose client costs more CPU per request than the server on 2 cores)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def post(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def _load(
    port: int, model: str, body: bytes, concurrency: int, seconds: float, warmup_s: float
) -> dict[str, Any]:
    """Closed loop: ``concurrency`` workers each send the next request as soon as the last answer came."""
    request = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: dict[str, int] = {}
    connections = [await _Connection.open("127.0.0.1", port) for _ in range(concurrency)]
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + seconds

    async def worker(conn: _Connection) -> None:
        while (now := time.perf_counter()) < stop_at:
            status = await conn.post(request)
            done = time.perf_counter()
            if now < measure_from:
                continue
            if status == 200:
                latencies.append(done - now)
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1

    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    lat = np.asarray(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": seconds,
        "throughput_rps": len(latencies) / seconds,
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)),
            "p99": float(np.percentile(lat, 99)),
            "mean": float(lat.mean()),
            "max": float(lat.max()),
        },
    }


async def _batch_stats(base: str) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{base}/metrics")).text
    sums: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "edgefleet_serving_batch_size":
            continue
        for s in family.samples:
            if s.name.endswith(("_sum", "_count")):
                sums.setdefault(s.labels["model"], {})[s.name.rsplit("_", 1)[1]] = s.value
    return {m: v["sum"] / v["count"] for m, v in sums.items() if v.get("count")}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "mlp.onnx"
        build_model(model, args.dims)
        config = Path(tmp) / "serving.json"
        models = [
            {"name": name, "path": str(model), "device": args.device, "intra_op_threads": args.threads, "batching": b}
            for name, b in MODES.items()
        ]
        config.write_text(json.dumps({"models": models}))
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(config), "--port", str(port)],
            cwd=ROOT,
            env=env,
        )
        try:
            await _wait_ready(base, proc)
            x = np.random.default_rng(1).standard_normal((1, args.dims[0])).astype(np.float32)
            body = json.dumps(
                {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, args.dims[0]], "data": x.ravel().tolist()}]}
            ).encode()
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            for round_ in range(args.rounds):
                order = list(MODES) if round_ % 2 == 0 else list(reversed(MODES))
                for mode in order:
                    result = await _load(port, mode, body, args.concurrency, args.seconds, args.warmup)
                    runs[mode].append(result)
                    print(
                        f"round {round_} {mode:8s} {result['throughput_rps']:8.1f} req/s  "
                        f"p50 {result['latency_ms']['p50']:7.1f} ms  p99 {result['latency_ms']['p99']:7.1f} ms  "
                        f"errors {result['errors']}",
                        flush=True,
                    )
            mean_batch = await _batch_stats(base)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    summary: dict[str, Any] = {}
    for mode, results in runs.items():
        requests = sum(r["requests"] for r in results)
        seconds = sum(r["seconds"] for r in results)
        summary[mode] = {
            "config": MODES[mode],
            "throughput_rps": requests / seconds,
            "p50_ms": float(np.median([r["latency_ms"]["p50"] for r in results])),
            "p99_ms": float(max(r["latency_ms"]["p99"] for r in results)),  # worst round: conservative
            "mean_batch_size": mean_batch.get(mode),
            "errors": sum(sum(r["errors"].values()) for r in results),
            "rounds": results,
        }
    b, s = summary["batched"], summary["single"]
    speedup = b["throughput_rps"] / s["throughput_rps"]
    return {
        "benchmark": "serving",
        "description": "V2 JSON infer over HTTP, closed loop; dynamic batching vs one request at a time, same model",
        "model": {
            "kind": "onnx mlp",
            "dims": list(args.dims),
            "input": [1, args.dims[0]],
            "device": args.device,
            "intra_op_threads": args.threads,
        },
        "load": {
            "concurrency": args.concurrency,
            "seconds_per_round": args.seconds,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1m_at_end": os.getloadavg()[0],  # the machine may be shared: context for the numbers
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "results": summary,
        "speedup_throughput": speedup,
        "p99_ratio_batched_over_single": b["p99_ms"] / s["p99_ms"],
        "goal": {"throughput_x": 3.0, "met": bool(speedup >= 3.0 and b["p99_ms"] <= s["p99_ms"])},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--dims", type=lambda v: tuple(int(d) for d in v.split(",")), default=DIMS, help="MLP widths, e.g. 256,2048,16"
    )
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per model")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.port)
        return
    report = asyncio.run(bench(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    b, s = report["results"]["batched"], report["results"]["single"]
    print(
        f"batched {b['throughput_rps']:.0f} req/s p99 {b['p99_ms']:.1f} ms (mean batch {b['mean_batch_size']})"
        f" | single {s['throughput_rps']:.0f} req/s p99 {s['p99_ms']:.1f} ms"
        f" | {report['speedup_throughput']:.1f}x, goal met: {report['goal']['met']} -> {args.out}"
    )


if __name__ == "__main__":
    main()
