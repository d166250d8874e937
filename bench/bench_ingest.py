"""Telemetry ingestion benchmark: batches per second the hub ingests from devices through a real broker,
beside the broker's own throughput for payloads of the same size, measured in the same run.
Writes bench/results/ingest.json.

Hub: the real `hub.app.Hub` (a telemetry worker), one process per worker, on the machine's Mosquitto, ingesting
through `DeviceTraffic` (raw hand-off on the receiving thread) and the `TelemetryIngestor` (block decode, device check,
the checks of `validate_batch` including every feature sketch, COPY / multi-row writes, duplicate check, window
aggregates, acknowledgements, `FleetMetrics`).
Each configuration ``DATABASE:WORKERS`` (``--configs``) runs on SQLite (WAL) in a temporary directory or on a
fresh schema of the machine's PostgreSQL; with two workers, two hub processes share the telemetry through an
MQTT shared subscription and one database. Each hub process is a telemetry worker (``ingest_only``, as
docs/scale-out.md deploys them): a full hub would also consume the device states and events that other work on
a shared broker publishes (in one profile ~9% of a worker's CPU, varying with that work), and the benchmark
publishes only telemetry. Time runs from the first publish until the last batch is in the
database.

``--baseline-ref REF`` measures the hub code of that git ref too (exported to a temporary directory), in the
same run and interleaved, so before/after compare under the same machine load.

Both are closed-loop: the publisher keeps at most 500 messages published and not yet taken off the broker by
the hub workers (or by the reference's subscriber), so Mosquitto never holds more than its 1,000 per subscriber
(see `publish_all`); each worker reports what it received every 10 ms. Each configuration also runs with the
window counted on batches stored instead (``DATABASE:WORKERS:stored``), which charges the hub's whole write
latency to the publisher as well: a lower bound of the same throughput.

Each hub run also reports ``hub_cpu_us_per_batch``: the CPU the hub processes used (every thread, not the
database server's) from ready to the end of the run, per stored batch. On a machine shared with other work the
rates swing with the load; this stays put, so it is the figure to compare trees by.

Broker: the same publisher sends the same payloads (QoS 1) to a topic one plain subscriber reads; time runs
from the first publish until the last message is received.

A second, separate measurement, worker capacity by drain (``drain`` and ``two_workers_over_one_drain`` in the
JSON; ``--drain-configs``): the broker's rate caps what any number of workers can show against a live publisher
(once one worker stores 0.6x of it, two cannot store 1.7x as much), so here the workers' consumption is held
back. On a private Mosquitto started by the benchmark (``max_queued_messages 0``: it queues every QoS 1 message
for a subscriber that does not read; the machine's broker keeps 1,000 per client and drops the rest) the hub
workers subscribe, are stopped (SIGSTOP), every batch is published and acknowledged by the broker, and the
workers are continued (SIGCONT): time runs from then until the last batch is in the database, and the run
checks that every published batch was stored. Not comparable with ``share_of_broker_rate``: no publisher runs
during the drain. Each run also reports how busy the machine's CPUs were (``machine_cpu_busy_share``); beside the
median-based ``two_workers_over_one_drain``, ``two_workers_over_one_drain_best`` compares each configuration's
least disturbed run.

    .venv/bin/python bench/bench_ingest.py [--batches 5000] [--devices 500] [--features 8]
        [--configs sqlite:1,postgresql:1,postgresql:2] [--drain-configs postgresql:1,postgresql:2]
        [--baseline-ref main]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.registry_db import database  # noqa: E402
from fleet.wire import topics  # noqa: E402
from fleet.wire.messages import TelemetryBatch, encode  # noqa: E402
from fleet.wire.mqtt import BrokerAddress, PahoBroker  # noqa: E402
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS, FeatureSketcher, HistogramAccumulator  # noqa: E402

TARGETS = ("rpi4-arm64", "jetson-orin", "x86-onnx-cpu")
#: A run ends when no batch was stored for this long: a batch the broker dropped is then counted as lost
#: (``stored`` < ``batches``) and the rate is what was stored until the last progress.
STALL_S = 20.0
#: What the publisher's window counts for the hub: ``received`` (taken off the broker by the workers, the rule of
#: the broker's reference: ``share_of_broker_rate``) and ``stored`` (in the database: configurations ``...:stored``).
PACES = ("received", "stored")


def make_payloads(n: int, devices: int, features: int, values: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` encoded telemetry batches (topic, payload) from ``devices`` devices, ``features`` sketches each."""
    rng = np.random.default_rng(seed)
    templates = []
    for _ in range(32):
        lat_acc = HistogramAccumulator(LATENCY_BUCKETS_MS)
        lat_acc.observe_many(rng.lognormal(np.log(30), 0.3, values))
        conf_acc = HistogramAccumulator(CONFIDENCE_BUCKETS)
        conf_acc.observe_many(np.clip(rng.normal(0.9, 0.05, values), 0, 1))
        sketcher = FeatureSketcher()
        for f in range(features):
            sketcher.update_column(f"f{f}", rng.normal(0, 1, values))
        templates.append((lat_acc.to_histogram(), conf_acc.to_histogram(), sketcher.to_wire()))
    now = time.time()
    out = []
    for i in range(n):
        lat, conf, sketches = templates[i % len(templates)]
        device = f"bench-{i % devices:05d}"
        batch = TelemetryBatch(
            batch_id=f"b-{uuid.uuid4().hex}",
            device_id=device,
            target=TARGETS[(i % devices) % len(TARGETS)],
            model="bench",
            version="1.0.0",
            window_start=now - 60,
            window_end=now,
            requests=values,
            errors=1,
            latency_ms=lat,
            confidence=conf,
            predictions={"cat": values - 40, "dog": 40},
            feature_sketches=sketches,
        )
        out.append((topics.device_topic(device, "telemetry"), encode(batch)))
    return out


def publish_all(
    address: BrokerAddress,
    payloads: list[tuple[str, bytes]],
    done: Callable[[], int],
    topic: str | None = None,
    window: int = 500,
) -> float:
    """Publish every payload at QoS 1 from one client, keeping at most ``window`` messages published but not
    yet ``done()`` (received or stored): Mosquitto drops QoS 1 messages queued beyond 1,000 for a slow
    subscriber (``max_queued_messages``), so an open-loop burst would measure losses, not throughput.
    Return when the last publish was acknowledged."""
    client = PahoBroker(address, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
    try:
        last = None
        for sent, (t, payload) in enumerate(payloads):
            waited_since = time.monotonic()
            while sent % 50 == 0 and sent - done() > window and time.monotonic() - waited_since < STALL_S:
                time.sleep(0.005)
            last = client._client.publish(topic or t, payload, qos=1)
        if last is not None:
            last.wait_for_publish(120)
        return time.perf_counter()
    finally:
        client.close()


def broker_throughput(address: BrokerAddress, payloads: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Publish -> receive rate of the payloads on one topic with one subscriber."""
    topic = f"bench/ingest/{uuid.uuid4().hex[:8]}"
    done = threading.Event()
    received = [0]

    def on_message(_message: object) -> None:
        received[0] += 1
        if received[0] == len(payloads):
            done.set()

    subscriber = PahoBroker(address, client_id=f"bench-sub-{uuid.uuid4().hex[:8]}")
    try:
        subscriber.subscribe(topic, on_message)
        subscriber.publish_and_wait(f"{topic}/warmup", b"x")
        start = time.perf_counter()
        published = publish_all(address, payloads, lambda: received[0], topic)
        if not done.wait(120):
            raise RuntimeError(f"broker delivered {received[0]}/{len(payloads)}")
        end = time.perf_counter()
    finally:
        subscriber.close()
    return {
        "messages": len(payloads),
        "seconds": end - start,
        "messages_per_s": len(payloads) / (end - start),
        "publish_s": published - start,
    }


PROVISION = """
import sys
sys.path.insert(0, sys.argv[1])
from hub.registry import Database, Device
db = Database(sys.argv[2])
targets = sys.argv[4].split(",")
with db.session() as session:
    for d in range(int(sys.argv[3])):
        session.add(Device(id=f"bench-{d:05d}", target=targets[d % len(targets)], credential_hash="-"))
db.close()
"""

WORKER = """
import logging, sys, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
logging.disable(logging.WARNING)  # other tests' retained states on the shared broker are refused noisily
from hub.config import HubSettings
from hub.app import Hub
hub = Hub(HubSettings(data_dir=Path(sys.argv[2]), database_url=sys.argv[3], broker_url=sys.argv[4],
                      hub_secret="bench", shared_telemetry=sys.argv[5] == "1", share_group=sys.argv[6],
                      ingest_only=True, telemetry_prune_interval_s=0))
hub.start()
print("ready", flush=True)
cpu_at_ready = time.process_time()


reporting = threading.Event()


def report_received():
    while not reporting.wait(0.01):  # what this worker took off the broker, for the publisher's window
        sys.stdout.write(f"received {hub.ingestor.received if hub.ingestor else 0}\\n")
        sys.stdout.flush()


reporter = threading.Thread(target=report_received, daemon=True)
reporter.start()
sys.stdin.read()
reporting.set()
reporter.join()
cpu_s = time.process_time() - cpu_at_ready
ingestor = hub.ingestor
hub.stop()
print(ingestor.received if ingestor else 0, ingestor.stored if ingestor else 0, cpu_s, flush=True)
"""


class _Workers:
    """Hub worker processes on a fresh database (`_workers`): their pids, the stored count to poll and the
    received count they report (every 10 ms)."""

    def __init__(self, procs: list[subprocess.Popen[str]], stored: Callable[[], int]) -> None:
        self.procs = procs
        self.stored = stored
        self.outputs: list[list[str]] = [[] for _ in procs]
        """Per worker, once stopped: received, stored and CPU seconds from ready to the end."""
        self._received = [0] * len(procs)
        self._readers = [
            threading.Thread(target=self._read, args=(i,), daemon=True, name=f"worker-{i}-stdout")
            for i in range(len(procs))
        ]

    def start_reading(self) -> None:
        """Follow the workers' output (once each said it is ready)."""
        for reader in self._readers:
            reader.start()

    def _read(self, worker: int) -> None:
        stdout = self.procs[worker].stdout
        assert stdout is not None
        for line in stdout:
            words = line.split()
            if words[:1] == ["received"]:
                self._received[worker] = int(words[1])
            else:
                self.outputs[worker].extend(words)

    def received(self) -> int:
        """Batches the workers took off the broker so far (as last reported)."""
        return sum(self._received)

    def finish(self) -> None:
        """Stop the workers (stdin closed) and wait for what each prints last."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc, reader in zip(self.procs, self._readers, strict=True):
            proc.wait(timeout=60)
            if reader.ident is not None:  # started
                reader.join(timeout=10)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every worker process."""
        for proc in self.procs:
            os.kill(proc.pid, signum)

    def wait_stored(self, expected: int) -> tuple[int, float]:
        """Poll the database until ``expected`` batches are stored or none was stored for `STALL_S`; return the
        count and when (perf_counter) it last grew, or now when all are in."""
        count, progress_at = self.stored(), time.monotonic()
        while count < expected and time.monotonic() - progress_at < STALL_S:
            time.sleep(0.02)  # polling the database the workers write to
            if (now_count := self.stored()) > count:
                count, progress_at = now_count, time.monotonic()
        end = time.perf_counter() if count == expected else progress_at - time.monotonic() + time.perf_counter()
        return count, end

    def report(self) -> dict[str, Any]:
        """Per-worker received counts and the workers' CPU seconds (all threads; not the database server's)."""
        return {
            "received_per_worker": [int(o[-3]) for o in self.outputs if len(o) >= 3],
            "hub_cpu_s": sum(float(o[-1]) for o in self.outputs if len(o) >= 3),
        }


@contextlib.contextmanager
def _workers(broker_url: str, devices: int, workers: int, kind: str, code_root: Path) -> Iterator[_Workers]:
    """``workers`` hub processes running the code under ``code_root`` (a shared subscription when more than one)
    on a fresh ``kind`` database, each ready (subscribed); stopped (stdin closed) when the block ends."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp, database(kind, Path(tmp)) as database_url:
        group = f"bench-{uuid.uuid4().hex[:8]}"
        # provisioned by the code under test (its schema), without hashing hundreds of credentials
        subprocess.run(
            [sys.executable, "-c", PROVISION, str(code_root), database_url, str(devices), ",".join(TARGETS)], check=True
        )
        engine = sqlalchemy.create_engine(database_url)

        def stored() -> int:
            with engine.connect() as conn:
                return int(conn.execute(sqlalchemy.text("SELECT count(*) FROM telemetryrecord")).scalar_one())

        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    str(code_root),
                    str(Path(tmp) / f"hub{w}"),
                    database_url,
                    broker_url,
                    "1" if workers > 1 else "0",
                    group,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for w in range(workers)
        ]
        running = _Workers(procs, stored)
        try:
            for proc in procs:
                assert proc.stdout is not None
                if (line := proc.stdout.readline().strip()) != "ready":
                    raise RuntimeError(f"a hub worker did not start: {line[:200]!r}")
            running.start_reading()
            yield running
        finally:
            with contextlib.suppress(ProcessLookupError):
                running.signal(signal.SIGCONT)  # a worker stopped by a failed drain run still ends
            running.finish()
            engine.dispose()


def hub_throughput(
    address: BrokerAddress,
    broker_url: str,
    payloads: list[tuple[str, bytes]],
    devices: int,
    workers: int,
    kind: str,
    code_root: Path,
    pace: str,
) -> dict[str, Any]:
    """Batches per second stored by ``workers`` hub processes running the code under ``code_root`` (a shared
    subscription when more than one) on a fresh ``kind`` database, the publisher's window counted on what the
    workers ``received`` (as for the broker's reference) or ``stored``."""
    with _workers(broker_url, devices, workers, kind, code_root) as running:
        start = time.perf_counter()
        published = publish_all(address, payloads, running.received if pace == "received" else running.stored)
        count, end = running.wait_stored(len(payloads))
    report = running.report()
    return {
        "database": kind,
        "workers": workers,
        "paced_by": pace,
        "batches": len(payloads),
        "stored": count,
        "seconds": end - start,
        "batches_per_s": count / (end - start),
        "publish_s": published - start,
        "received_per_worker": report["received_per_worker"],
        # CPU of the hub processes from ready to the end of the run (all threads; not the database server's):
        # far steadier than the rates on a shared machine
        "hub_cpu_us_per_batch": 1e6 * report["hub_cpu_s"] / max(count, 1),
    }


#: The drain's private broker: every QoS 1 message queued for a subscriber that does not read (no limit), no
#: persistence. In-flight messages per client as the broker's default (20).
PRIVATE_BROKER_CONF = """listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
"""


@contextlib.contextmanager
def private_broker() -> Iterator[str]:
    """The URL of a Mosquitto of the benchmark's own on a free local port, stopped afterwards."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="bench-ingest-broker-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(PRIVATE_BROKER_CONF.format(port=port))
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the private Mosquitto did not start on port {port}")
                time.sleep(0.05)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


def _cpu_times() -> tuple[float, float] | None:
    """The machine's busy and total CPU time so far (jiffies, every CPU; /proc/stat), or None off Linux."""
    try:
        fields = [float(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle and iowait
    return sum(fields) - idle, sum(fields)


def hub_drain(
    broker_url: str, payloads: list[tuple[str, bytes]], devices: int, workers: int, kind: str, code_root: Path
) -> dict[str, Any]:
    """Batches per second ``workers`` hub processes store from a backlog of every payload queued at the broker
    at ``broker_url`` (the private one) while they were stopped; see the module docstring."""
    address = BrokerAddress.from_url(broker_url)
    with _workers(broker_url, devices, workers, kind, code_root) as running:
        running.signal(signal.SIGSTOP)
        publish_start = time.perf_counter()
        published_at = publish_all(address, payloads, lambda: 0, window=len(payloads))  # nothing read meanwhile
        held = running.stored()
        cpu_before = _cpu_times()
        start = time.perf_counter()
        running.signal(signal.SIGCONT)
        count, end = running.wait_stored(len(payloads))
        cpu_after = _cpu_times()
    report = running.report()
    busy = None
    if cpu_before is not None and cpu_after is not None and cpu_after[1] > cpu_before[1]:
        busy = (cpu_after[0] - cpu_before[0]) / (cpu_after[1] - cpu_before[1])
    return {
        "database": kind,
        "workers": workers,
        "published": len(payloads),
        "stored_while_held": held,
        "stored": count,
        "all_delivered": count == len(payloads),
        "seconds": end - start,
        "batches_per_s": count / (end - start),
        "publish_s_before_drain": published_at - publish_start,
        "received_per_worker": report["received_per_worker"],
        "hub_cpu_us_per_batch": 1e6 * report["hub_cpu_s"] / max(count, 1),
        # how busy the machine's CPUs were during the drain (every process: workers, database, broker, others):
        # near 1, the drain is bound by the cores, not by the workers
        "machine_cpu_busy_share": busy,
        "cpus": os.cpu_count(),
    }


@contextlib.contextmanager
def exported(ref: str | None) -> Iterator[Path | None]:
    """The tree of git ``ref`` exported to a temporary directory (None: no baseline)."""
    if ref is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="bench-ingest-baseline-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def summarise(runs: dict[str, list[dict[str, Any]]], broker_rate: float) -> dict[str, Any]:
    """Median rate and share of the broker's rate per configuration."""
    return {
        config: {
            "batches_per_s_median": statistics.median(r["batches_per_s"] for r in config_runs),
            "share_of_broker_rate": statistics.median(r["batches_per_s"] for r in config_runs) / broker_rate,
            "hub_cpu_us_per_batch_median": statistics.median(r["hub_cpu_us_per_batch"] for r in config_runs),
            "runs": config_runs,
        }
        for config, config_runs in runs.items()
    }


DRAIN_METHOD = (
    "workers subscribed and stopped (SIGSTOP); every batch published (QoS 1) to a private Mosquitto with "
    "max_queued_messages 0 and acknowledged by it; workers continued (SIGCONT); time from then until the last "
    "batch is in the database; no publisher runs meanwhile, so not comparable with share_of_broker_rate"
)


def summarise_drain(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median drain rate and CPU per configuration, and whether every run stored every published batch."""
    return {
        config: {
            "batches_per_s_median": statistics.median(r["batches_per_s"] for r in config_runs),
            # the least disturbed run: on a machine shared with other work, what the workers can do when not starved
            "batches_per_s_best": max(r["batches_per_s"] for r in config_runs),
            "hub_cpu_us_per_batch_median": statistics.median(r["hub_cpu_us_per_batch"] for r in config_runs),
            "all_delivered": all(r["all_delivered"] for r in config_runs),
            "machine_cpu_busy_share_median": statistics.median(r["machine_cpu_busy_share"] or 0.0 for r in config_runs),
            "runs": config_runs,
        }
        for config, config_runs in runs.items()
    }


def drain_scaling(drain: dict[str, Any], statistic: str = "median") -> dict[str, float]:
    """Two workers' drain rate over one worker's (``median`` or ``best`` runs), per database measured with both."""
    key = f"batches_per_s_{statistic}"
    return {
        kind: drain[f"{kind}:2"][key] / drain[f"{kind}:1"][key]
        for kind in ("sqlite", "postgresql")
        if f"{kind}:1" in drain and f"{kind}:2" in drain
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=5000)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--values", type=int, default=200, help="values per feature sketch in each batch")
    parser.add_argument(
        "--configs", default="sqlite:1,postgresql:1,postgresql:2", help="DATABASE:WORKERS to measure, comma-separated"
    )
    parser.add_argument(
        "--drain-configs",
        default="postgresql:1,postgresql:2",
        help="DATABASE:WORKERS whose capacity to drain a held-back backlog is measured (empty: none)",
    )
    parser.add_argument("--baseline-ref", default=None, help="also measure the hub code of this git ref")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--broker-url", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args()

    address = BrokerAddress.from_url(args.broker_url)
    configs = [(kind, int(workers)) for kind, workers in (c.split(":") for c in args.configs.split(",") if c)]
    drain_configs = [(kind, int(n)) for kind, n in (c.split(":") for c in args.drain_configs.split(",") if c)]
    t0 = time.perf_counter()
    payloads = make_payloads(args.batches, args.devices, args.features, args.values)
    setup_s = time.perf_counter() - t0
    sizes = [len(p) for _, p in payloads]
    broker_runs: list[dict[str, Any]] = []
    hub_runs: dict[str, list[dict[str, Any]]] = {}
    baseline_runs: dict[str, list[dict[str, Any]]] = {}
    drain_runs: dict[str, list[dict[str, Any]]] = {}
    baseline_drain_runs: dict[str, list[dict[str, Any]]] = {}
    drain_broker = private_broker() if drain_configs else contextlib.nullcontext(None)
    with exported(args.baseline_ref) as baseline_root, drain_broker as drain_url:
        trees = [(ROOT, hub_runs)] + ([(baseline_root, baseline_runs)] if baseline_root is not None else [])
        for _ in range(args.repeats):  # interleaved, so all see the same machine load
            broker_runs.append(broker_throughput(address, payloads))
            print(f"broker: {broker_runs[-1]['messages_per_s']:.0f} msg/s", flush=True)
            for kind, workers in configs:
                for (root, runs), pace in itertools.product(trees, PACES):
                    run = hub_throughput(address, args.broker_url, payloads, args.devices, workers, kind, root, pace)
                    config = f"{kind}:{workers}" + ("" if pace == "received" else ":stored")
                    runs.setdefault(config, []).append(run)
                    label = "baseline " if runs is baseline_runs else ""
                    print(
                        f"{label}hub {config}: {run['batches_per_s']:.0f} batches/s, "
                        f"{run['hub_cpu_us_per_batch']:.0f} us hub CPU per batch",
                        flush=True,
                    )
            for kind, workers in drain_configs:
                assert drain_url is not None
                for root, runs in [(ROOT, drain_runs)] + (
                    [(baseline_root, baseline_drain_runs)] if baseline_root is not None else []
                ):
                    run = hub_drain(drain_url, payloads, args.devices, workers, kind, root)
                    runs.setdefault(f"{kind}:{workers}", []).append(run)
                    label = "baseline " if runs is baseline_drain_runs else ""
                    print(
                        f"{label}drain {kind} x{workers}: {run['batches_per_s']:.0f} batches/s, "
                        f"{run['stored']}/{run['published']} stored, "
                        f"{run['hub_cpu_us_per_batch']:.0f} us hub CPU per batch, "
                        f"machine CPU {100 * (run['machine_cpu_busy_share'] or 0):.0f}% busy",
                        flush=True,
                    )
    broker_rate = statistics.median(r["messages_per_s"] for r in broker_runs)
    hub_results = summarise(hub_runs, broker_rate)
    scaling = {
        kind: hub_results[f"{kind}:2"]["batches_per_s_median"] / hub_results[f"{kind}:1"]["batches_per_s_median"]
        for kind in ("sqlite", "postgresql")
        if f"{kind}:1" in hub_results and f"{kind}:2" in hub_results
    }
    baseline = summarise(baseline_runs, broker_rate) if baseline_runs else None
    drain = summarise_drain(drain_runs)
    baseline_drain = summarise_drain(baseline_drain_runs) if baseline_drain_runs else None
    result = {
        "benchmark": "ingest",
        "params": {
            "batches": args.batches,
            "devices": args.devices,
            "features": args.features,
            "values_per_feature": args.values,
            "repeats": args.repeats,
            "broker_url": args.broker_url,
            "qos": 1,
            "configs": args.configs,
            "baseline_ref": args.baseline_ref,
            "drain_configs": args.drain_configs,
        },
        "payload_bytes": {"mean": statistics.mean(sizes), "min": min(sizes), "max": max(sizes)},
        "setup_s": setup_s,
        "broker": {"messages_per_s_median": broker_rate, "runs": broker_runs},
        "hub": hub_results,
        "two_workers_over_one": scaling,
        "baseline": baseline,
        # worker capacity, not capped by the publisher (module docstring): not comparable with the rates above
        "drain": {"method": DRAIN_METHOD, **drain},
        "two_workers_over_one_drain": drain_scaling(drain),
        "two_workers_over_one_drain_best": drain_scaling(drain, "best"),
        "baseline_drain": None
        if baseline_drain is None
        else {
            **baseline_drain,
            "two_workers_over_one_drain": drain_scaling(baseline_drain),
            "two_workers_over_one_drain_best": drain_scaling(baseline_drain, "best"),
        },
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_1m_at_end": os.getloadavg()[0],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {c: round(v["share_of_broker_rate"], 3) for c, v in hub_results.items()}
    cpu = {c: round(v["hub_cpu_us_per_batch_median"]) for c, v in hub_results.items()}
    if baseline:
        summary |= {f"baseline {c}": round(v["share_of_broker_rate"], 3) for c, v in baseline.items()}
        cpu |= {f"baseline {c}": round(v["hub_cpu_us_per_batch_median"]) for c, v in baseline.items()}
    print(
        json.dumps(
            {
                "broker_msg_per_s": round(broker_rate),
                "share_of_broker_rate": summary,
                "hub_cpu_us_per_batch": cpu,
                "x2": scaling,
                "drain_batches_per_s": {c: round(v["batches_per_s_median"]) for c, v in drain.items()},
                "two_workers_over_one_drain": drain_scaling(drain),
                "two_workers_over_one_drain_best": drain_scaling(drain, "best"),
                "baseline_two_workers_over_one_drain": None
                if baseline_drain is None
                else drain_scaling(baseline_drain),
            }
        )
    )


if __name__ == "__main__":
    main()
