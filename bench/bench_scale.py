"""Scale benchmark: simulated devices (`bench/devsim`, one event loop, the real wire protocol) against hub
replicas on one PostgreSQL schema and a 3-node NATS cluster speaking MQTT. Writes bench/results/scale.json.

For each fleet size (``--sizes``, default 1,000 then 10,000), with a fresh schema, cluster and hubs:

1. connect: the devices connect in paced steps, spread over the nodes, subscribe as the agent does and publish
   their retained state; the phase ends when the hubs marked every device online in the registry;
2. telemetry: every device sends one batch, spread over the agent's reporting interval (`AgentConfig.
   telemetry_interval_s`), so the offered rate is the fleet's real one; the ingest rate is batches acknowledged
   (the hub acknowledges after the commit) per second; the schema's size before and after gives the bytes per
   batch, scaled to a device-day at that interval;
3. rollout: one bundle to every device, canary 1% then waves of 10, 50 and 100%, no gate, created through the
   database as a follower's REST route does; wall time until the rollout is complete.

CPU seconds and peak RSS of every hub and broker process per phase come from /proc. The cost model fits
``cost = a + b * devices`` through the two sizes; the 1,000,000-device estimate is arithmetic on the measured
rates, in the JSON.

    .venv/bin/python bench/bench_scale.py [--sizes 1000,10000] [--replicas 3] [--broker nats|mosquitto]

Every phase has a timeout that stops the run with a one-line reason; every process started is killed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import scale_model  # noqa: E402
from bench.devsim import BatchTemplate, SimDevice, SimFleet  # noqa: E402
from bench.hub_setup import TARGET, provision, register_versions  # noqa: E402
from bench.registry_db import database  # noqa: E402
from hub.cluster.local_replicas import LocalReplicas, ReplicaError  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scale.json"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The run cannot go on (a timeout, a process that died): reported as one line."""


def proc_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and peak RSS in bytes of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        peak = next(
            int(line.split()[1]) * 1024
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
    except (OSError, StopIteration):
        return 0.0, 0
    return (int(fields[11]) + int(fields[12])) / TICKS, peak


@dataclass
class Processes:
    """Named processes whose CPU and peak memory are sampled at phase boundaries."""

    pids: dict[str, int] = field(default_factory=dict)
    marks: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)

    def mark(self, phase: str) -> None:
        self.marks[phase] = {name: proc_usage(pid) for name, pid in self.pids.items()}

    def between(self, start: str, end: str) -> dict[str, dict[str, float]]:
        """CPU seconds used between two marks, and peak RSS (MiB) at the second, per process."""
        return {
            name: {
                "cpu_s": round(self.marks[end][name][0] - self.marks[start][name][0], 2),
                "peak_rss_mib": round(self.marks[end][name][1] / 2**20, 1),
            }
            for name in self.pids
        }


@contextlib.contextmanager
def brokers(
    kind: str, workdir: Path, args: argparse.Namespace
) -> Iterator[tuple[list[str], str | None, dict[str, int], str]]:
    """MQTT URLs (one per node), the NATS client URLs replicas share traffic over (None on Mosquitto, whose
    shared subscriptions do that), the broker processes' pids, and a description."""
    if kind == "mosquitto":
        from tests.integration.private_mosquitto import PrivateMosquitto

        mosquitto = PrivateMosquitto(workdir)
        mosquitto.config.write_text(
            mosquitto.config.read_text().replace("max_inflight_messages 100\n", "")
            + "max_inflight_messages 100\nmax_queued_messages 100000\n"
        )
        try:
            mosquitto.start()
            assert mosquitto.process is not None
            pids = {"mosquitto": mosquitto.process.pid}
            yield [mosquitto.url], None, pids, "private Mosquitto, one node, anonymous"
        finally:
            mosquitto.stop()
        return
    from tests.integration.nats_cluster import NatsCluster

    cluster = NatsCluster(
        workdir,
        stream_replicas=args.stream_replicas,
        consumer_replicas=args.consumer_replicas,
        server=f"max_connections: {args.max_connections}",
        mqtt=f", max_ack_pending: {args.max_ack_pending}",
    )
    try:
        cluster.start(60)
        pids = {f"nats-n{i}": p.pid for i, p in enumerate(cluster.processes) if p is not None}
        nats = ",".join(cluster.nats_url(i) for i in range(len(pids)))
        yield [cluster.url(i) for i in range(len(pids))], nats, pids, "NATS 3-node cluster with MQTT, no authorization"
    finally:
        cluster.stop()


def schema_bytes(db: Any) -> int:
    """Bytes of every table (with indexes and TOAST) in the current schema of the hub's PostgreSQL."""
    import sqlalchemy

    with db.engine.connect() as conn:
        value = conn.execute(
            sqlalchemy.text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')"
            )
        ).scalar()
    return int(value or 0)


def online_count(db: Any, prefix: str) -> int:
    import sqlalchemy

    with db.engine.connect() as conn:
        return int(
            conn.execute(
                sqlalchemy.text("SELECT count(*) FROM device WHERE online AND id LIKE :p"), {"p": f"{prefix}%"}
            ).scalar()
            or 0
        )


def rollout_final(db: Any, rollout_id: str) -> bool:
    """Whether the rollout reached a final state (one column read: the snapshot is O(devices) to parse)."""
    import sqlalchemy

    with db.engine.connect() as conn:
        final = conn.execute(sqlalchemy.text("SELECT final FROM rollout WHERE id = :i"), {"i": rollout_id}).scalar()
    return bool(final)


def progress(message: str) -> None:
    """One line on stderr per phase, so a slow run shows where it is."""
    print(f"bench_scale: {message}", file=sys.stderr, flush=True)


def waited(
    fleet: SimFleet, hubs: LocalReplicas, what: str, condition: Any, timeout_s: float, *, fatal: bool = True
) -> float:
    """Seconds until ``condition()`` held (checked every 0.25 s against hubs, database and devices); past
    ``timeout_s``, BenchError, or with ``fatal=False`` the seconds waited (the caller reports what it got)."""
    start = time.perf_counter()
    deadline = start + timeout_s
    while not condition():
        hubs.check_alive()
        if fleet.error is not None:
            raise BenchError(f"the device simulator failed: {fleet.error!r}")
        if time.perf_counter() > deadline:
            if not fatal:
                progress(f"{what}: not finished in {timeout_s:g} s, reported as it stands")
                return time.perf_counter() - start
            lost = f", {fleet.lost_count} sessions lost, e.g. {fleet.lost[0]}" if fleet.lost else ""
            raise BenchError(
                f"{what} did not happen in {timeout_s:g} s (devices: {fleet.ready} subscribed, "
                f"{fleet.acked_batches} batches acknowledged, {fleet.finished} updated{lost})"
            )
        time.sleep(0.25)  # polling the database and another process: no event to wait on
    seconds = time.perf_counter() - start
    progress(f"{what}: {seconds:.1f} s")
    return seconds


def measure(size: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run at ``size`` devices: connect, telemetry, rollout; everything it started stopped on return."""
    from agent.config import AgentConfig
    from fleet.rollout import FINAL_STATES
    from fleet.rollout_plan import plan_from_cli
    from hub.app import Hub
    from hub.config import HubSettings
    from hub.registry.rollouts import RolloutStore
    from hub.rollouts.operations import create_rollout

    interval_s = float(AgentConfig.model_fields["telemetry_interval_s"].default)
    heartbeat_s = float(AgentConfig.model_fields["heartbeat_interval_s"].default)
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
        database("postgresql") as url,
        brokers(args.broker, Path(tmp), args) as (urls, nats_urls, broker_pids, broker_kind),
    ):
        base = HubSettings(
            data_dir=Path(tmp) / "hub",
            database_url=url,
            broker_url=urls[0],
            replica=args.replicas > 1,
            chunk_size=args.chunk_kb * 1024,
            telemetry_prune_interval_s=0,
            device_offline_after_s=3600,
        )
        extra = {"share_nats_url": nats_urls} if args.replicas > 1 and nats_urls else {}
        settings = [base.model_copy(update={"broker_url": urls[i % len(urls)], **extra}) for i in range(args.replicas)]
        publisher = Hub(base)  # not started: registers versions and devices through the shared database
        installed, new_sha = register_versions(publisher, args.bundle_kb * 1024)
        prefix = f"s{secrets.token_hex(2)}-"
        ids = [f"{prefix}{i:06d}" for i in range(size)]
        provision(publisher, ids)
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        hubs = LocalReplicas(logs)
        fleet = SimFleet([_host_port(u) for u in urls], max_pending=args.max_pending, heartbeat_s=heartbeat_s)
        processes = Processes()
        try:
            hubs.start(settings, 120)
            processes.pids = {f"hub-{i}": p.pid for i, p in enumerate(hubs.processes)} | broker_pids
            processes.mark("start")
            template = BatchTemplate(TARGET, "digits", "1.0.0", features=args.features)
            devices = [
                SimDevice(
                    d,
                    TARGET,
                    installed,
                    fleet,
                    subscribe_qos=args.subscribe_qos,
                    chunk_timeout_s=args.chunk_timeout,
                    telemetry=template,
                    telemetry_interval_s=interval_s,
                )
                for d in ids
            ]
            # 1. connect
            began = time.perf_counter()
            fleet.start(devices)
            subscribed_s = waited(
                fleet, hubs, f"{size} devices subscribing", lambda: fleet.ready >= size, args.phase_timeout
            )
            waited(
                fleet,
                hubs,
                f"the hubs marking {size} devices online",
                lambda: online_count(publisher.db, prefix) >= size,
                args.phase_timeout,
            )
            connect_s = time.perf_counter() - began
            processes.mark("connected")
            # 2. telemetry, at the agent's rate: each device once per interval, in slices
            size_before = schema_bytes(publisher.db)
            slices = 20
            began = time.perf_counter()
            for k in range(slices):
                fleet.send_telemetry(devices[k::slices])
                time.sleep(interval_s / slices)  # pacing the offered load at the agent's rate
            offered_s = time.perf_counter() - began
            ingest_s = waited(
                fleet,
                hubs,
                f"the hubs acknowledging {size} telemetry batches",
                lambda: fleet.acked_batches + fleet.rejected_batches >= size,
                args.phase_timeout,
            )
            ingest_wall = offered_s + ingest_s
            size_after = schema_bytes(publisher.db)
            processes.mark("telemetry")
            # 3. rollout
            store = RolloutStore(publisher.registry.db)
            plan = plan_from_cli(
                "digits:2.0.0",
                canary="1%",
                waves="10,50,100",
                gate=False,
                min_devices=10,
                device_timeout_s=600,
                max_failure_rate=args.max_failure_rate,
            )
            began = time.perf_counter()
            rollout_id = create_rollout(store, publisher.registry, plan).rollout_id
            rollout_s = waited(
                fleet,
                hubs,
                f"the rollout to {size} devices",
                lambda: rollout_final(publisher.db, rollout_id),
                args.rollout_timeout,
                fatal=False,
            )
            snapshot = store.load(rollout_id)
            processes.mark("rollout")
            qos1 = qos1_probe(fleet, hubs, processes, installed, args) if args.qos1_probe else None
            done_at = [d.done_at for d in devices if d.done_at is not None]
            start_wall = time.time() - (time.perf_counter() - began)
            stored = fleet.acked_batches
            per_batch = (size_after - size_before) / max(1, stored)
            waves = {r.device_id: r.wave for r in snapshot.devices.values() if r.wave is not None}
            return {
                "devices": size,
                "hub_replicas": args.replicas,
                "broker": broker_kind,
                "broker_nodes": len(urls),
                "connect": {
                    "seconds_to_subscribed": round(subscribed_s, 2),
                    "seconds_to_online_in_registry": round(connect_s, 2),
                    "devices_per_s": round(size / connect_s, 1),
                    "refused_subscriptions": sum(
                        d.session.refused_subscriptions for d in devices if d.session is not None
                    ),
                    "connect_errors": fleet.connect_errors,
                    "lost_sessions": fleet.lost_count,
                },
                "telemetry": {
                    "batches_sent": size,
                    "batches_stored": stored,
                    "batches_rejected": fleet.rejected_batches,
                    "batches_sent_again_after_ack_timeout": sum(d.telemetry_resent for d in devices),
                    "offered_per_s": round(size / offered_s, 1),
                    "ingest_batches_per_s": round(stored / ingest_wall, 1),
                    "seconds_from_first_send_to_last_ack": round(ingest_wall, 2),
                    "batch_payload_bytes": len(template.render("x", interval_s)[1]),
                    "feature_sketches_per_batch": args.features,
                    "schema_bytes_before_after": [size_before, size_after],
                    "db_bytes_per_batch": round(per_batch),
                    "agent_telemetry_interval_s": interval_s,
                    "agent_heartbeat_interval_s": heartbeat_s,
                    "db_bytes_per_device_per_day": round(per_batch * 86400 / interval_s),
                },
                "rollout": {
                    "state": snapshot.state.value,
                    "finished": snapshot.state in FINAL_STATES,
                    "wall_s": round(rollout_s, 2),
                    "max_failure_rate": args.max_failure_rate,
                    "devices_failed": sum(1 for d in devices if d.failure is not None),
                    "failures": dict(Counter(d.failure for d in devices if d.failure is not None)),
                    "waves": len(set(waves.values())),
                    "waves_timeline": wave_timeline(devices, waves, start_wall),
                    "metadata_requests_per_device": round(sum(d.metadata_requests for d in devices) / size, 2),
                    "devices_on_new_version": sum(
                        1 for d in devices if d.installed is not None and d.installed.sha256 == new_sha
                    ),
                    "first_and_last_device_done_s": [
                        round(min(done_at) - start_wall, 2),
                        round(max(done_at) - start_wall, 2),
                    ]
                    if done_at
                    else None,
                    "devices_that_asked_again": sum(1 for d in devices if d.requests > 1),
                    "bundle_bytes": args.bundle_kb * 1024,
                    "chunk_bytes": args.chunk_kb * 1024,
                },
                "processes": {
                    "connect": processes.between("start", "connected"),
                    "telemetry": processes.between("connected", "telemetry"),
                    "rollout": processes.between("telemetry", "rollout"),
                    "whole_run": processes.between("start", "rollout"),
                },
                "qos1_subscriptions_probe": qos1,
                "simulator_cpu_s": round(time.process_time(), 2),
            }
        finally:
            try:
                fleet.stop()
            finally:
                try:
                    hubs.stop()
                finally:
                    publisher.db.close()


def qos1_probe(
    fleet: SimFleet, hubs: LocalReplicas, processes: Processes, installed: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """More devices connecting as the agent does, subscribing at QoS 1 (on NATS each such subscription is a
    JetStream consumer): devices per second and broker CPU per device, for the estimate."""
    count = args.qos1_probe
    ids = [f"q1-{secrets.token_hex(2)}-{i:05d}" for i in range(count)]  # not provisioned: the hubs drop their states
    devices = [SimDevice(d, TARGET, installed, fleet, subscribe_qos=1) for d in ids]
    before = fleet.ready
    fleet.add(devices)
    seconds = waited(
        fleet, hubs, f"{count} devices subscribing at QoS 1", lambda: fleet.ready >= before + count, args.phase_timeout
    )
    processes.mark("qos1")
    broker_cpu = sum(v["cpu_s"] for k, v in processes.between("rollout", "qos1").items() if not k.startswith("hub"))
    return {
        "devices": count,
        "subscriptions_per_device": 3,
        "seconds": round(seconds, 2),
        "devices_per_s": round(count / seconds, 1),
        "broker_cpu_s_per_device": round(broker_cpu / count, 4),
        "refused_subscriptions": sum(d.session.refused_subscriptions for d in devices if d.session is not None),
        "note": "measured after the rollout, on the same cluster and fleet; fleet-wide QoS 1 would add this to every "
        "connect",
    }


def wave_timeline(devices: list[SimDevice], waves: dict[str, int], start: float) -> list[dict[str, Any]]:
    """Per wave, seconds since the rollout was created: [first, last] order received, bundle complete, metadata
    asked for, done reported."""
    by_id = {d.device_id: d for d in devices}
    out = []
    for wave in sorted(set(waves.values())):
        members = [by_id[d] for d, w in waves.items() if w == wave and d in by_id]

        def span(values: list[float | None]) -> list[float] | None:
            seen = [v - start for v in values if v is not None]
            return [round(min(seen), 2), round(max(seen), 2)] if seen else None

        out.append(
            {
                "wave": wave,
                "devices": len(members),
                "orders_received_s": span([d.order_at for d in members]),
                "bundles_complete_s": span([d.finished_at for d in members]),
                "done_s": span([d.done_at for d in members]),
                "devices_that_asked_again": sum(1 for d in members if d.requests > 1),
            }
        )
    return out


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """How this run differs from a production fleet, and the limits it raised."""
    nats = args.broker == "nats"
    return {
        "devices": "bench/devsim: one asyncio process, one MQTT session per device, the agent's messages (state, "
        "events, fetch for chunks and TUF metadata, telemetry batches, heartbeats); no TUF signature checks, no "
        "files, no model",
        "subscriptions": f"devices subscribe at QoS {args.subscribe_qos}"
        + (
            " (the agent subscribes at QoS 1: on NATS each QoS 1 subscription is a JetStream consumer, measured "
            "separately in qos1_subscriptions_probe); devices still publish at QoS 1"
            if args.subscribe_qos == 0
            else ""
        ),
        "authentication": "none: the broker has no authorization block (NATS) or allows anonymous clients "
        "(Mosquitto); devices are provisioned in the registry (the hubs drop traffic from unknown ids) and send "
        "their id and a password as the agent does",
        "broker_limits": (
            {
                "max_connections": args.max_connections,
                "mqtt.max_ack_pending": args.max_ack_pending,
                "mqtt.stream_replicas": args.stream_replicas or 3,
                "mqtt.consumer_replicas": args.consumer_replicas or 3,
            }
            if nats
            else {"max_queued_messages": 100000}
        ),
        "hub": "each replica a process of its own (hub.app.Hub), replica=True with share_nats_url on NATS; "
        "PostgreSQL schema shared; telemetry pruning off; device_offline_after_s 3600",
        "bundle": f"{args.bundle_kb} KiB in {args.chunk_kb} KiB chunks over MQTT broadcast",
        "telemetry": f"{args.features} KLL feature sketches and 200 requests per batch",
    }


def _host_port(url: str) -> tuple[str, int]:
    from fleet.wire.mqtt import BrokerAddress

    address = BrokerAddress.from_url(url)
    return address.host, address.port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="fleet sizes, smallest first")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--broker", choices=("nats", "mosquitto"), default="nats")
    parser.add_argument("--bundle-kb", type=int, default=96)
    parser.add_argument("--chunk-kb", type=int, default=64)
    parser.add_argument("--features", type=int, default=8, help="KLL feature sketches per telemetry batch")
    parser.add_argument(
        "--subscribe-qos", type=int, choices=(0, 1), default=0, help="the agent subscribes at 1 (see qos1_probe)"
    )
    parser.add_argument("--chunk-timeout", type=float, default=5.0, help="the agent's chunk_timeout_s")
    parser.add_argument("--max-pending", type=int, default=200, help="sessions connecting at once")
    parser.add_argument("--stream-replicas", type=int, default=1, help="NATS MQTT stream replicas (docs: 3)")
    parser.add_argument("--consumer-replicas", type=int, default=1, help="NATS MQTT consumer replicas (docs: 3)")
    parser.add_argument("--max-connections", type=int, default=65536, help="NATS max_connections per node")
    parser.add_argument("--max-ack-pending", type=int, default=10000, help="NATS MQTT max_ack_pending")
    parser.add_argument(
        "--max-failure-rate",
        type=float,
        default=0.99,
        help="the plan's failure threshold (below 1); default 0.99: the rollout goes on, failed devices counted",
    )
    parser.add_argument("--qos1-probe", type=int, default=300, help="devices connecting at QoS 1 after the rollout")
    parser.add_argument("--phase-timeout", type=float, default=240.0, help="seconds each phase may take")
    parser.add_argument("--rollout-timeout", type=float, default=420.0)
    parser.add_argument("--logs", type=Path, default=None, help="keep the hubs' logs here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench_scale: terminated"))  # so the finally blocks run
    load_before = os.getloadavg()
    started = time.perf_counter()
    runs = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            runs.append(measure(size, args))
            print(json.dumps(runs[-1]), flush=True)
    except (BenchError, ReplicaError) as exc:
        raise SystemExit(f"bench_scale: {exc}") from None
    large = runs[-1]
    result: dict[str, Any] = {
        "bench": "scale",
        "devices": large["devices"],
        "hub_replicas": args.replicas,
        "broker": large["broker"],
        "rollout_wall_s": large["rollout"]["wall_s"],
        "rollout_state": large["rollout"]["state"],
        "rollout_finished": large["rollout"]["finished"],  # False: wall_s is the timeout, a lower bound
        "rollout_devices_on_new_version": large["rollout"]["devices_on_new_version"],
        "rollout_devices_failed": large["rollout"]["devices_failed"],
        "ingest_batches_per_s": large["telemetry"]["ingest_batches_per_s"],
        "db_bytes_per_device_per_day": large["telemetry"]["db_bytes_per_device_per_day"],
        "hubs": {k: v for k, v in large["processes"]["whole_run"].items() if k.startswith("hub")},
        "setup": setup(args),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    if len(runs) >= 2:
        model = scale_model.fit(runs[0], large)
        result["cost_model"] = model
        result["estimate_1m"] = scale_model.estimate_million(large, model, large.get("qos1_subscriptions_probe"))
    result["runs"] = runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
