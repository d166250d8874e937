"""Agent memory over a long run: RSS of a real agent process while it serves and reports telemetry.

Starts a hub (embedded broker), one ``edgefleet-agent`` process with the demo model, then drives HTTP
inference for ``--seconds`` while sampling the agent's resident memory. Writes bench/results/agent_memory.json.
Bounded memory shows as a flat RSS after warm-up (the slope is reported in MiB per 10,000 requests).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from hub.app import Hub
from hub.config import HubSettings
from hub.demo.model import digits_manifest, train_digits
from hub.demo.run import DEMO_TARGET
from hub.demo.simulator import SimulatedFleet


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/agent_memory.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trained = train_digits(root / "model", epochs=20)
        hub = Hub(HubSettings(data_dir=root / "hub"))
        hub.start()
        fleet = SimulatedFleet(hub, root / "fleet")
        try:
            manifest = digits_manifest(trained, "1.0.0", target=DEMO_TARGET)
            hub.publish(manifest, trained.onnx_path, trained.golden_x, trained.golden_logits)
            (device,) = fleet.provision(1, DEMO_TARGET, telemetry_interval_s=1.0)
            fleet.start()
            deployment = hub.deploy("digits", "1.0.0", [device.device_id])
            hub.wait_deployment(deployment.id, 60)
            assert device.process is not None
            pid = device.process.pid
            samples: list[tuple[int, float]] = []
            requests = 0
            started = time.monotonic()
            next_sample = started
            with httpx.Client(timeout=10) as client:
                while time.monotonic() - started < args.seconds:
                    row = trained.test_x[requests % len(trained.test_x)]
                    client.post(f"{device.api_url}/v1/predict", json={"inputs": row.tolist()}).raise_for_status()
                    requests += 1
                    if time.monotonic() >= next_sample:
                        samples.append((requests, _rss_mib(pid)))
                        next_sample += 2.0
            samples.append((requests, _rss_mib(pid)))
        finally:
            fleet.stop()
            hub.stop()
    warm = [s for s in samples if s[0] >= samples[-1][0] * 0.25]
    slope = float(np.polyfit([s[0] for s in warm], [s[1] for s in warm], 1)[0]) * 10_000 if len(warm) > 2 else 0.0
    result = {
        "benchmark": "agent_memory",
        "seconds": args.seconds,
        "requests": requests,
        "requests_per_s": round(requests / args.seconds, 1),
        "rss_mib_first": samples[0][1],
        "rss_mib_last": samples[-1][1],
        "rss_mib_max": max(s[1] for s in samples),
        "slope_mib_per_10k_requests_after_warmup": round(slope, 3),
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
