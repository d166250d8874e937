"""Soak benchmark: a fleet of real agents left running under chaos while rollouts and inference traffic go on.
Writes bench/results/soak.json.

Parts are the real ones: a private Mosquitto with persistence on (`tests.integration.private_mosquitto`), the
in-process `hub.app.Hub` on SQLite in a data directory, and ``--agents`` real ``edgefleet-agent`` processes
(`hub.demo.simulator.SimulatedFleet`). For ``--minutes`` a single director thread, one event at a time:

- starts a rollout of the next digits version (1.0.0, 1.1.0, ...) every ``--rollout-every`` seconds once the
  previous one is final (canary 10%, waves 50,100, no gate, failures do not halt it);
- SIGKILLs a random agent about every ``--kill-every`` seconds and starts it again ``--agent-down`` seconds
  later. To keep the count about acknowledged data, the agent first gets no more traffic and the director
  waits (polling the database, with a deadline) until the hub stored every request the driver counted for
  it: a SIGKILL loses by design what an agent recorded in memory and never wrote to its outbox;
- restarts the hub (``stop()``, ``--hub-down`` seconds, a new `Hub` on the same data directory) about every
  ``--hub-restart-every`` seconds, and the broker (a clean stop, SIGTERM, which writes its persistence file,
  ``--broker-down`` seconds, start) about every ``--broker-restart-every`` seconds.

Traffic threads meanwhile send one-digit predictions to the running agents' ``/v1/predict`` at ``--rate``
requests/s in all, counting the answered (200) requests per device. Every minute the bench process's RSS
(the hub runs in it) and every agent's RSS are sampled with psutil.

After the chaos window: every agent runs, the last rollout is waited for (``--settle`` seconds at most) and
``converged_fraction`` = devices the hub lists on the last version / all devices. Then traffic stops, the
director waits until the hub stored every answered request, stops the agents cleanly (SIGTERM) and counts
what is left in their outboxes. See ``definitions`` in the JSON for the loss and duplicate counts.

    PYTHONPATH=. .venv/bin/python bench/soak.py [--agents 50] [--minutes 30] [--out bench/results/soak.json]

Target: converged_fraction 1.0, batches_lost 0, batches_duplicated 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import func
from sqlmodel import col, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet.rollout import FINAL_STATES  # noqa: E402
from fleet.rollout_plan import plan_from_cli  # noqa: E402
from hub.app import Hub  # noqa: E402
from hub.config import HubSettings  # noqa: E402
from hub.demo.model import TrainedDigits, digits_manifest, train_digits  # noqa: E402
from hub.demo.simulator import SimulatedDevice, SimulatedFleet  # noqa: E402
from hub.registry.tables import TelemetryRecord  # noqa: E402
from tests.integration.private_mosquitto import PrivateMosquitto  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "soak.json"
TARGET = "x86-onnx-cpu"
MIB = 1024 * 1024
DEFINITIONS = {
    "answered": "requests a device's /v1/predict answered 200, as counted by the traffic driver",
    "stored": "sum of `requests` over the telemetry batches the hub stored for the device",
    "requests_lost": "sum over devices of max(0, answered - stored) after the final drain",
    "requests_duplicated": "sum over devices of max(0, stored - answered) after the final drain",
    "batches_lost": "batch files that never reached the hub's storage: left in agents' outboxes after the "
    "final clean stop, plus those the hub refused (outbox rejected/ folders)",
    "batches_duplicated": "stored telemetry rows beyond one per batch id (the primary key makes this 0 unless "
    "broken), plus requests_duplicated > 0 counted as one; duplicate receipts the hub saw and deduplicated "
    "are reported apart, as duplicate_receipts_deduplicated",
    "converged_fraction": "devices the hub lists on the last rolled-out version / all devices, after the "
    "chaos stopped and the last rollout finished or the settle period ran out",
}


class Traffic:
    """Threads sending one-digit predictions to running agents, counting answers per device."""

    def __init__(self, devices: list[SimulatedDevice], trained: TrainedDigits, rate: float, threads: int) -> None:
        self.trained = trained
        self.answered: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._active = {d.device_id: d for d in devices}
        self._in_flight: Counter[str] = Counter()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._pause_s = threads / rate
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        """Start sending."""
        for thread in self._threads:
            thread.start()

    def withhold(self, device: SimulatedDevice) -> None:
        """Send the device nothing more and wait until its requests in flight are answered."""
        with self._cond:
            self._active.pop(device.device_id, None)
            self._cond.wait_for(lambda: self._in_flight[device.device_id] == 0, 30)

    def resume(self, device: SimulatedDevice) -> None:
        """Send the device traffic again."""
        with self._cond:
            self._active[device.device_id] = device

    def stop(self) -> None:
        """Stop sending and wait for the threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.wait(self._pause_s):  # pacing of the offered load, not synchronisation
                with self._cond:
                    if not self._active:
                        continue
                    device = rng.choice(list(self._active.values()))
                    self._in_flight[device.device_id] += 1
                try:
                    index = rng.randrange(len(self.trained.test_x))
                    body = {"inputs": self.trained.test_x[index].tolist()}
                    ok = client.post(f"{device.api_url}/v1/predict", json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with self._cond:
                    (self.answered if ok else self.failed)[device.device_id] += 1
                    self._in_flight[device.device_id] -= 1
                    self._cond.notify_all()


class MemorySampler(threading.Thread):
    """Once a minute: this process's RSS (the hub is in it) and each running agent's RSS, in MiB."""

    def __init__(self, fleet: SimulatedFleet, started: float, interval_s: float = 60.0) -> None:
        super().__init__(name="soak-memory", daemon=True)
        self.fleet = fleet
        self.started = started
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        self.sample()
        while not self.halt.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """Take one sample now."""
        agents: dict[str, float] = {}
        for device in list(self.fleet.devices):
            process = device.process
            if process is None or process.poll() is not None:
                continue
            try:
                agents[device.device_id] = round(psutil.Process(process.pid).memory_info().rss / MIB, 1)
            except psutil.Error:
                continue
        values = sorted(agents.values())
        self.samples.append(
            {
                "minute": round((time.monotonic() - self.started) / 60, 2),
                "hub_process_rss_mib": round(psutil.Process().memory_info().rss / MIB, 1),
                "agents_sampled": len(values),
                "agent_rss_mib_min": values[0] if values else None,
                "agent_rss_mib_median": values[len(values) // 2] if values else None,
                "agent_rss_mib_max": values[-1] if values else None,
                "agent_rss_mib": agents,
            }
        )


class Soak:
    """The run: broker, hub, fleet, traffic and the director's timeline."""

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.rng = random.Random(args.seed)
        self.started = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.rollouts: list[dict[str, Any]] = []
        self.duplicate_receipts = 0
        (root / "broker").mkdir(parents=True)
        self.broker = PrivateMosquitto(root / "broker", persistent=True)
        self.settings = HubSettings(data_dir=root / "hub", broker_url=self.broker.url)
        self.hub: Hub
        self.fleet: SimulatedFleet
        self.trained: TrainedDigits
        self.versions: list[str] = []

    # -- helpers ----------------------------------------------------------------------------------------------

    def now(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def record(self, kind: str, **details: Any) -> None:
        event = {"t_s": self.now(), "kind": kind, **details}
        self.events.append(event)
        print(json.dumps(event), flush=True)

    def stored_requests(self, device_id: str | None = None) -> dict[str, int]:
        """Sum of ``requests`` over stored batches, per device."""
        query = select(TelemetryRecord.device_id, func.sum(TelemetryRecord.requests)).group_by(
            col(TelemetryRecord.device_id)
        )
        if device_id is not None:
            query = query.where(TelemetryRecord.device_id == device_id)
        with self.hub.db.session() as session:
            return {d: int(n or 0) for d, n in session.exec(query)}

    def wait_stored(self, device_ids: list[str], traffic: Traffic, timeout_s: float) -> bool:
        """Poll until the hub stored every answered request of these devices (or the deadline)."""
        deadline = time.monotonic() + timeout_s
        while True:
            stored = self.stored_requests()
            if all(stored.get(d, 0) >= traffic.answered[d] for d in device_ids):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)  # polling another process's telemetry through the database: no event to wait on

    def start_hub(self) -> None:
        self.hub = Hub(self.settings)
        self.hub.start()

    def stop_hub(self) -> None:
        if self.hub.ingestor is not None:
            self.hub.ingestor.wait_idle(30)
            self.duplicate_receipts += self.hub.ingestor.duplicates
        self.hub.stop()

    # -- chaos and rollouts -------------------------------------------------------------------------------------

    def next_rollout(self) -> None:
        version = f"1.{len(self.versions)}.0"
        manifest = digits_manifest(self.trained, version, target=TARGET)
        self.hub.publish(manifest, self.trained.onnx_path, self.trained.golden_x, self.trained.golden_logits)
        plan = plan_from_cli(
            f"digits:{version}",
            canary="10%",
            waves="50,100",
            gate=False,
            max_failure_rate=0.99,
            min_devices=1,
            device_timeout_s=self.args.device_timeout,
        )
        assert self.hub.rollouts is not None
        snapshot = self.hub.rollouts.start_rollout(plan, rollout_id=f"soak-{version.replace('.', '-')}")
        self.versions.append(version)
        self.rollouts.append({"rollout_id": snapshot.rollout_id, "version": version, "started_s": self.now()})
        self.record("rollout_started", version=version, rollout_id=snapshot.rollout_id)

    def rollout_final(self) -> bool:
        if not self.rollouts or self.hub.rollouts is None:
            return True
        snapshot = self.hub.rollouts.store.load(self.rollouts[-1]["rollout_id"])
        return snapshot.state in FINAL_STATES

    def finish_rollout_records(self) -> None:
        assert self.hub.rollouts is not None
        for entry in self.rollouts:
            snapshot = self.hub.rollouts.store.load(entry["rollout_id"])
            entry["state"] = snapshot.state.value
            entry["phases"] = dict(Counter(r.phase.value for r in snapshot.devices.values()))

    def kill_agent(self, traffic: Traffic) -> None:
        running = [d for d in self.fleet.devices if d.process is not None]
        device = self.rng.choice(running)
        traffic.withhold(device)
        settled = self.wait_stored([device.device_id], traffic, self.args.kill_settle)
        self.fleet.kill(device)
        self.record("agent_killed", device=device.device_id, telemetry_settled=settled)
        threading.Event().wait(self.args.agent_down)  # the device stays down this long
        self.fleet.start([device], timeout_s=120)
        traffic.resume(device)
        self.record("agent_restarted", device=device.device_id)

    def restart_hub(self) -> None:
        self.stop_hub()
        self.record("hub_stopped")
        threading.Event().wait(self.args.hub_down)  # the outage
        self.start_hub()
        self.fleet.hub = self.hub
        self.record("hub_started")

    def restart_broker(self) -> None:
        self.broker.stop(graceful=True)
        self.record("broker_stopped")
        threading.Event().wait(self.args.broker_down)  # the outage
        self.broker.start()
        self.record("broker_started")

    def close(self) -> None:
        """Stop whatever is still running (after a failure; a no-op after a normal run)."""
        if hasattr(self, "fleet"):
            self.fleet.stop()
        if hasattr(self, "hub"):
            self.hub.stop()
        self.broker.stop()

    def jitter(self, mean_s: float) -> float:
        return self.now() + self.rng.uniform(0.5 * mean_s, 1.5 * mean_s)

    # -- the run ---------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        self.trained = train_digits(self.root / "model")
        self.broker.start()
        self.start_hub()
        self.fleet = SimulatedFleet(self.hub, self.root / "fleet")
        self.fleet.provision(args.agents, TARGET, prefix="soak")
        self.fleet.start(timeout_s=60 + 10 * args.agents)
        self.record("fleet_started", agents=args.agents)
        sampler = MemorySampler(self.fleet, self.started)
        sampler.start()
        traffic = Traffic(self.fleet.devices, self.trained, args.rate, args.traffic_threads)
        traffic.start()
        chaos_end = self.now() + args.minutes * 60
        next_at = {
            "rollout": self.now(),
            "kill": self.jitter(args.kill_every),
            "hub": self.jitter(args.hub_restart_every),
            "broker": self.jitter(args.broker_restart_every),
        }
        while self.now() < chaos_end:
            kind = min(next_at, key=lambda k: next_at[k])
            wait = next_at[kind] - self.now()
            if next_at[kind] > chaos_end:
                threading.Event().wait(max(0.0, chaos_end - self.now()))
                break
            if wait > 0:
                threading.Event().wait(wait)  # the timeline's pacing
            if kind == "rollout":
                if self.rollout_final():
                    self.next_rollout()
                    next_at["rollout"] = self.now() + args.rollout_every
                else:
                    next_at["rollout"] = self.now() + 10
            elif kind == "kill":
                self.kill_agent(traffic)
                next_at["kill"] = self.jitter(args.kill_every)
            elif kind == "hub":
                self.restart_hub()
                next_at["hub"] = self.jitter(args.hub_restart_every)
            else:
                self.restart_broker()
                next_at["broker"] = self.jitter(args.broker_restart_every)
        self.record("chaos_stopped")

        # settle: the last rollout finishes, every device should run the last version
        final_version = self.versions[-1]
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline:
            current = [d for d in self.hub.registry.list_devices() if d.active_version == final_version]
            if self.rollout_final() and len(current) == args.agents:
                break
            threading.Event().wait(2)  # polling the hub's view of the fleet
        devices = self.hub.registry.list_devices()
        on_final = sum(1 for d in devices if d.active_model == "digits" and d.active_version == final_version)
        versions = dict(Counter(f"{d.active_model}:{d.active_version}" for d in devices))
        self.record("settled", on_final=on_final, versions=versions)
        self.finish_rollout_records()

        # drain: traffic stops, the hub stores every answered request, agents stop cleanly
        traffic.stop()
        ids = [d.device_id for d in self.fleet.devices]
        drained = self.wait_stored(ids, traffic, args.drain)
        self.record("traffic_stopped", drained=drained)
        self.fleet.stop()
        sampler.halt.set()
        sampler.join()
        sampler.sample()
        left = sum(len(list((d.config_path.parent / "data" / "outbox").glob("*.json"))) for d in self.fleet.devices)
        refused = sum(
            len(list((d.config_path.parent / "data" / "outbox" / "rejected").glob("*.json")))
            for d in self.fleet.devices
        )
        stored = self.stored_requests()
        with self.hub.db.session() as session:
            rows = int(session.exec(select(func.count()).select_from(TelemetryRecord)).one())
            distinct = int(session.exec(select(func.count(func.distinct(TelemetryRecord.batch_id)))).one())
        self.stop_hub()
        self.broker.stop(graceful=True)
        requests_lost = sum(max(0, traffic.answered[d] - stored.get(d, 0)) for d in ids)
        requests_duplicated = sum(max(0, stored.get(d, 0) - traffic.answered[d]) for d in ids)
        counts = Counter(e["kind"] for e in self.events)
        return {
            "agents": args.agents,
            "minutes": args.minutes,
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "converged_fraction": round(on_final / args.agents, 4),
            "final_version": final_version,
            "versions_at_end": versions,
            "batches_lost": left + refused,
            "batches_duplicated": (rows - distinct) + int(requests_duplicated > 0),
            "requests_answered": sum(traffic.answered.values()),
            "requests_failed": sum(traffic.failed.values()),
            "requests_stored": sum(stored.values()),
            "requests_lost": requests_lost,
            "requests_duplicated": requests_duplicated,
            "batches_stored": rows,
            "batches_left_in_outboxes": left,
            "batches_refused_by_hub": refused,
            "duplicate_receipts_deduplicated": self.duplicate_receipts,
            "agent_kills": counts["agent_killed"],
            "kills_before_telemetry_settled": sum(
                1 for e in self.events if e["kind"] == "agent_killed" and not e["telemetry_settled"]
            ),
            "hub_restarts": counts["hub_started"],
            "broker_restarts": counts["broker_started"],
            "rollouts": self.rollouts,
            "memory": sampler.samples,
            "events": self.events,
            "definitions": DEFINITIONS,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the chaos window")
    parser.add_argument("--rate", type=float, default=20.0, help="predictions per second over the whole fleet")
    parser.add_argument("--traffic-threads", type=int, default=4)
    parser.add_argument("--rollout-every", type=float, default=180.0, help="seconds between rollout starts")
    parser.add_argument("--kill-every", type=float, default=30.0, help="mean seconds between agent kills")
    parser.add_argument("--agent-down", type=float, default=5.0)
    parser.add_argument("--kill-settle", type=float, default=60.0, help="wait for a victim's telemetry this long")
    parser.add_argument("--hub-restart-every", type=float, default=240.0)
    parser.add_argument("--hub-down", type=float, default=10.0)
    parser.add_argument("--broker-restart-every", type=float, default=300.0)
    parser.add_argument("--broker-down", type=float, default=5.0)
    parser.add_argument("--device-timeout", type=float, default=600.0, help="rollout device timeout")
    parser.add_argument("--settle", type=float, default=300.0, help="wait for the last rollout this long")
    parser.add_argument("--drain", type=float, default=120.0, help="wait for the final telemetry this long")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edgefleet-soak-") as tmp:
        soak = Soak(args, args.workdir or Path(tmp))
        try:
            body = soak.run()
        finally:
            soak.close()
    result = {
        "bench": "soak",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "started_unix": round(started),
        "wall_seconds": round(time.time() - started, 1),
        **body,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("memory", "events")}, indent=2))


if __name__ == "__main__":
    main()
