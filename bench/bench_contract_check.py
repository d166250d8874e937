"""Cost of the data contract check on the agent's request path: `agent.contract.check_request` on the raw
inputs of one request, 64 features (the digits model's), batch 1 and batch 64, with per-feature ranges and
without.

Writes bench/results/contract_check.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from agent.contract import check_request
from fleet.wire.contract import DataContract, infer


def _p50_us(contract: DataContract, batches: list[list[list[float]]], repeats: int) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        check_request(contract, batches[i % len(batches)])
        times.append((time.perf_counter() - start) * 1e6)
    return float(np.median(times))


def main() -> None:
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 16, (1000, 64)).astype(np.float32)
    contracts = {"range": infer({"input": calib}), "per_feature": infer({"input": calib}, per_feature=True)}
    repeats = 3000
    result: dict[str, object] = {"benchmark": "contract_check", "features": 64, "repeats": repeats}
    for rows in (1, 64):
        batches = [rng.uniform(0, 16, (rows, 64)).tolist() for _ in range(50)]
        for name, contract in contracts.items():
            for batch in batches[:20]:  # warm up
                check_request(contract, batch)
            result[f"batch{rows}_{name}_us_p50"] = _p50_us(contract, batches, repeats)
    out = Path(__file__).parent / "results" / "contract_check.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
