"""Cost of a failed device login on the hub: known id with a wrong secret, unknown id, and a backed-off id.

Calls the hub's credential check (`Hub._check_credentials`, what the embedded broker calls per CONNECT) on a
registry in SQLite, ``--rounds`` times each, and writes bench/results/logins.json with the median and p90 in ms.
An enumeration oracle shows as an unknown id answering faster than a known one; back-off as a refusal in microseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hub.app import Hub
from hub.auth import BackoffPolicy, LoginBackoffSettings
from hub.config import HubSettings

#: No back-off for the first two cases (every attempt is hashed); the last one backs the id off.
OPEN = BackoffPolicy(free_failures=1_000_000, max_keys=10)


def _timings_ms(call: Callable[[], bool], rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        assert not call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 3), "p90_ms": round(samples[int(0.9 * len(samples))], 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("bench/results/logins.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = HubSettings(
            data_dir=Path(tmp), login_backoff=LoginBackoffSettings(per_identity=OPEN, per_address=OPEN)
        )
        hub = Hub(settings)
        try:
            hub.registry.provision_device("cam-1", "rpi4-arm64")
            check = hub._check_credentials
            check("warm-up", "x", "10.0.0.1")  # the dummy hash is made once per process
            result = {
                "known_id_wrong_secret": _timings_ms(lambda: check("cam-1", "wrong", "10.0.0.1"), args.rounds),
                "unknown_id": _timings_ms(lambda: check("ghost", "wrong", "10.0.0.1"), args.rounds),
            }
            strict = Hub(settings.model_copy(update={"login_backoff": LoginBackoffSettings()}))
            try:
                strict.registry.provision_device("cam-2", "rpi4-arm64")
                for _ in range(6):  # five free failures, the sixth backs the id off
                    strict._check_credentials("cam-2", "wrong", "10.0.0.2")
                result["backed_off_id"] = _timings_ms(
                    lambda: strict._check_credentials("cam-2", "wrong", "10.0.0.3"), args.rounds
                )
            finally:
                strict.db.close()
        finally:
            hub.db.close()
    result["rounds"] = args.rounds
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
