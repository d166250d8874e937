"""Rollout benchmark: time and hub egress to roll one bundle out to 1,000 simulated devices in waves, beside the
broker's own fan-out of the same chunks to the same waves, measured in the same run. Writes
bench/results/rollout.json.

The hub is the real one (`hub.app.Hub` with its `RolloutManager`), in a process of its own as on its own
machine (it shares no interpreter lock with the devices), on a Mosquitto of the run's own. Devices are
`bench.devsim` simulated devices (one MQTT session each, all on one event loop), not full agents, with
``verify=False``: each reports a retained state, takes its retained deployment order, and either (the hub's
default, ``--retained-chunks-max`` 512) receives the chunks the hub keeps retained for the rollout as it subscribes,
asking for nothing, or (``--retained-chunks-max 0``, or a bundle with more chunks) subscribes to the bundle's
broadcast topic and asks for the chunks at once (as the agent does: the request tells the hub it listens), asks
again for missing ones after ``--chunk-timeout`` of silence, checks the sha256 and reports done (no TUF
metadata, no install steps; `bench_scale.py` runs the full update). The rollout is a canary of 1% and
waves of 10, 50 and 100% with no gate, so all of the time is distribution and the engine's own bookkeeping.

Fan-out reference (after the rollout, ``--fanout-rounds`` times, the median kept): the same clients subscribe to
one topic per wave of the rollout (the devices that wave reached); for each wave in turn a publisher sends as
many chunk-sized messages as the bundle has chunks, at QoS 1 like the hub's chunks, and the next wave starts
once every device of this one received them all (closed loop, so a loaded machine slows it down but never
makes it drop messages). A wave that does not complete within its timeout stops the run with a one-line reason.

    .venv/bin/python bench/bench_rollout.py [--devices 1000] [--bundle-kb 256] [--broker-url mqtt://127.0.0.1:1883]

``wall_over_fanout`` is the rollout's wall time over the broker's fan-out time for the same bytes and waves;
``egress_bundles_per_wave`` is the hub's egress in bundles over the number of waves (canary included).
``waves_timeline`` says where each wave's time went, from the devices' side: orders received, requests sent,
bundles complete, and the engine marking the wave complete.

Goal (issue 13): wall_over_fanout <= 1.5 and egress_bundles_per_wave <= 1.2, late joiners included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.devsim import SimDevice, SimFleet  # noqa: E402
from bench.hub_setup import TARGET, provision, register_versions  # noqa: E402
from bench.registry_db import database  # noqa: E402
from fleet.rollout import FINAL_STATES, RolloutSnapshot  # noqa: E402
from fleet.rollout_plan import plan_from_cli  # noqa: E402
from fleet.wire import topics  # noqa: E402
from fleet.wire.messages import (  # noqa: E402
    InstalledModel,
)
from fleet.wire.mqtt import BrokerAddress  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "rollout.json"


class BenchError(RuntimeError):
    """The run cannot go on (a timeout, a device that failed): reported as one line."""


def fanout_topic(wave: int) -> str:
    """The reference fan-out's topic for the devices of one wave."""
    return topics.broadcast_topic(f"bench-fanout-{wave}")


FANOUT_PREFIX = fanout_topic(0)[: -len("0")]


class Fanout:
    """Counts the reference fan-out's deliveries per message key (its first 16 bytes), for the waiting thread."""

    def __init__(self) -> None:
        self._counts: dict[bytes, int] = {}
        self._waiting_for: dict[bytes, int] = {}
        self._cond = threading.Condition()

    def received(self, _device: SimDevice, topic: str, payload: bytes) -> None:
        """`SimFleet.on_other`: a message on a topic the device protocol does not use."""
        if not topic.startswith(FANOUT_PREFIX):
            return
        key = payload[:16]
        with self._cond:
            self._counts[key] = self._counts.get(key, 0) + 1
            if self._counts[key] >= self._waiting_for.get(key, 1 << 62):
                self._cond.notify_all()

    def wait(self, key: bytes, count: int, timeout_s: float) -> bool:
        with self._cond:
            self._waiting_for[key] = count
            return self._cond.wait_for(lambda: self._counts.get(key, 0) >= count, timeout_s)

    def count(self, key: bytes) -> int:
        with self._cond:
            return self._counts.get(key, 0)

    def forget(self, keys: list[bytes]) -> None:
        with self._cond:
            for key in keys:
                self._counts.pop(key, None)
                self._waiting_for.pop(key, None)


def fanout_publisher(address: BrokerAddress) -> paho.Client:
    """The fan-out publisher, connected with its own loop thread (made before the devices: low descriptors)."""
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{secrets.token_hex(3)}")
    publisher.username_pw_set("bench-publisher", "bench")
    publisher.connect(address.host, address.port)
    publisher.loop_start()
    return publisher


def subscribe_waves(fleet: SimFleet, waves: dict[str, int], timeout_s: float) -> None:
    """Subscribe each device that a wave reached to that wave's fan-out topic (QoS 1, as bundle topics are)."""
    by_id = {d.device_id: d for d in fleet.devices}
    before = fleet.subacks

    def subscribe() -> None:
        for device_id, wave in waves.items():
            session = by_id[device_id].session
            if session is not None:
                session.subscribe([(fanout_topic(wave), 1)])

    fleet.call(subscribe)
    if not fleet.wait_for(lambda f: f.subacks - before >= len(waves), timeout_s):
        raise BenchError(
            f"only {fleet.subacks - before} of {len(waves)} fan-out subscriptions acknowledged in {timeout_s:g} s"
        )


def measure_fanout(
    publisher: paho.Client, fanout: Fanout, sizes: list[int], chunk_bytes: int, chunks: int
) -> list[float]:
    """The broker alone delivering ``chunks`` messages of ``chunk_bytes`` to each wave in turn; seconds per wave.

    Closed loop: a wave's messages go out at QoS 1 (the publisher's client queues beyond its in-flight window)
    and the next wave starts only once every device of this one has them all."""
    seconds = []
    for wave, size in enumerate(sizes):
        if size == 0:
            seconds.append(0.0)
            continue
        keys = [secrets.token_bytes(16) for _ in range(chunks)]
        timeout_s = 60.0 + size * chunks / 100  # generous: 100 deliveries a second would still finish
        start = time.perf_counter()
        for key in keys:
            publisher.publish(fanout_topic(wave), key + bytes(chunk_bytes - 16), qos=1)
        for key in keys:
            remaining = timeout_s - (time.perf_counter() - start)
            if not fanout.wait(key, size, max(0.0, remaining)):
                got = sum(fanout.count(k) for k in keys)
                raise BenchError(
                    f"broker fan-out: wave {wave} got {got} of {size * chunks} deliveries in {timeout_s:g} s "
                    "(machine too loaded, or the broker dropped messages)"
                )
        seconds.append(time.perf_counter() - start)
        fanout.forget(keys)
    return seconds


def wave_timeline(
    fleet: SimFleet, waves: dict[str, int], wave_done: list[float], start: float, chunks: int
) -> list[dict[str, Any]]:
    """Per wave, from the devices' side, seconds since the rollout started: orders received, last request sent,
    bundles complete, the engine marking the wave complete."""
    by_id = {d.device_id: d for d in fleet.devices}
    out = []
    for wave in sorted(set(waves.values())):
        members = [by_id[d] for d, w in waves.items() if w == wave]

        def span(values: list[float | None]) -> list[float] | None:
            seen = [v - start for v in values if v is not None]
            return [round(min(seen), 3), round(max(seen), 3)] if seen else None

        out.append(
            {
                "wave": wave,
                "devices": len(members),
                "orders_received_s": span([d.order_at for d in members]),
                "requests_sent_s": span([d.asked_at for d in members]),
                "bundles_complete_s": span([d.finished_at for d in members]),
                "devices_that_asked_again": sum(1 for d in members if d.requests > 1),
                "duplicate_chunk_frames": sum(d.frames for d in members) - len(members) * chunks,
                "wave_complete_s": round(wave_done[wave] - start, 3) if wave < len(wave_done) else None,
            }
        )
    return out


def where_time_goes(timeline: list[dict[str, Any]]) -> dict[str, float]:
    """The rollout's seconds split by phase, summed over the waves (from `wave_timeline`)."""
    phases = {
        "engine: wave complete to first order received (tick, stores, sequences, publish)": 0.0,
        "orders reaching the wave's devices and their requests (broker, devices)": 0.0,
        "last order or request to first bundle complete (hub broadcast, or retained chunks)": 0.0,
        "chunk fan-out: first to last bundle complete (broker, devices)": 0.0,
        "hub: last bundle complete to wave complete (reading outcomes, tick)": 0.0,
    }
    names = list(phases)
    previous = 0.0
    for wave in timeline:
        orders, requests, bundles = wave["orders_received_s"], wave["requests_sent_s"], wave["bundles_complete_s"]
        complete = wave["wave_complete_s"]
        if not (orders and bundles and complete is not None):
            continue
        # retained chunks: devices ask for nothing, and the first bundles complete while orders still go out
        last_asked = max(orders[1], requests[1]) if requests else orders[0]
        marks = [previous, orders[0], last_asked, max(last_asked, bundles[0]), bundles[1], complete]
        for name, start, end in zip(names, marks[:-1], marks[1:], strict=True):
            phases[name] += max(0.0, end - start)
        previous = complete
    return {name: round(seconds, 3) for name, seconds in phases.items()}


@contextlib.contextmanager
def private_mosquitto(tmp: Path) -> Iterator[tuple[str, int]]:
    """A Mosquitto of our own on a free port (anonymous, no persistence): no other clients, no old retained
    messages, and the file limit of this process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000\n")
    process = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("private mosquitto did not start") from None
                time.sleep(0.05)  # polling a subprocess's port: there is no event to wait on
        yield f"mqtt://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(10)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, database(args.database, Path(tmp)) as url:
        args.database_url = url
        if args.broker_url:
            return run_on(args, args.broker_url, Path(tmp), None)
        with private_mosquitto(Path(tmp)) as (broker_url, pid):
            return {**run_on(args, broker_url, Path(tmp), pid), "broker": "private mosquitto " + mosquitto_version()}


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU seconds a process has used so far (0 for an unknown broker)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mosquitto_version() -> str:
    out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].split()[-1] if out else "?"


def hub_process(conn: Connection, settings_json: str, bundle_bytes: int, ids: list[str]) -> None:
    """The hub in a process of its own, as on its own machine (no interpreter lock shared with the simulated
    devices): registers the versions, provisions the devices, then answers the driver's commands."""
    from hub.app import Hub
    from hub.config import HubSettings

    hub = Hub(HubSettings.model_validate_json(settings_json))
    hub.start()
    try:
        installed, new_sha = register_versions(hub, bundle_bytes)
        provision(hub, ids)
        conn.send(("ok", (installed.model_dump_json(), new_sha)))
        while True:
            command, payload = conn.recv()
            if command == "stop":
                return
            if command == "ready":
                conn.send(("ok", sees_every_state(hub, payload)))
            elif command == "rollout":
                conn.send(("ok", roll_out(hub, new_sha, **payload)))
    except Exception as exc:  # reported by the driver as one line
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        hub.stop()


def sees_every_state(hub: Any, timeout_s: float) -> bool:
    """Whether the hub's rollout view holds every device's retained state (before the rollout starts)."""
    assert hub.rollouts is not None
    manager = hub.rollouts
    return bool(manager.wait_for(lambda: all(s.update_state is not None for s in manager.statuses()), timeout_s))


def roll_out(hub: Any, new_sha: str, *, waves: str, rollout_id: str, timeout_s: float) -> dict[str, Any]:
    """Run the rollout in the hub's process; return what the driver reports."""
    assert hub.transfer is not None and hub.rollouts is not None
    manager, transfer = hub.rollouts, hub.transfer
    ticks: list[tuple[float, float]] = []
    untimed = manager.tick

    def tick() -> None:  # the worker calls self.tick: timed here, for the report
        began = time.time()
        untimed()
        ticks.append((began, time.time() - began))

    manager.tick = tick
    phases = time_phases(manager)
    plan = plan_from_cli("digits:2.0.0", canary="1%", waves=waves, gate=False, min_devices=10, device_timeout_s=600)
    egress, broadcasts = transfer.egress_bytes, transfer.broadcasts
    cpu = time.process_time()
    start_wall, start = time.time(), time.perf_counter()
    snapshot = manager.start_rollout(plan, rollout_id=rollout_id)
    snapshot = manager.wait(snapshot.rollout_id, lambda s: s.state in FINAL_STATES, timeout_s)
    duration = time.perf_counter() - start
    if snapshot.state not in FINAL_STATES:
        raise BenchError(f"the rollout did not finish in {timeout_s:g} s: {snapshot.state.value}, {snapshot.reason}")
    return {
        "snapshot": snapshot.model_dump_json(),
        "start_wall": start_wall,
        "seconds": duration,
        "egress_bytes": transfer.egress_bytes - egress,
        "broadcasts": transfer.broadcasts - broadcasts,
        "ticks": ticks,
        "cpu_seconds": time.process_time() - cpu,
        "tick_phases": {name: round(seconds, 3) for name, seconds in phases.items()},
        "bundle_bytes": hub.store.size(new_sha),
    }


def time_phases(manager: Any) -> dict[str, float]:
    """Seconds the engine's ticks spend in each part, summed (bench instrumentation of one manager)."""
    import hub.rollouts.manager as module

    phases: dict[str, float] = {}

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - began

        return call

    manager.statuses = timed("statuses", manager.statuses)
    module.step = timed("step (fleet.rollout engine)", module.step)
    for name in ("load", "save", "mark_done", "mirror_deployment", "pending_commands", "open_ids"):
        setattr(manager.store, name, timed(f"store.{name}", getattr(manager.store, name)))
    for name in ("send_all", "send"):  # (a hub from before wave orders went out at once had only send)
        if hasattr(manager.orders, name):
            setattr(manager.orders, name, timed("orders (sequences, publish)", getattr(manager.orders, name)))
            break
    if manager.push is not None:
        manager.push = timed("transfer.push", manager.push)
    return phases


class HubProcess:
    """The driver's end of `hub_process`."""

    def __init__(self, settings_json: str, bundle_bytes: int, ids: list[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=hub_process, args=(child, settings_json, bundle_bytes, ids), name="bench-hub", daemon=True
        )
        self.process.start()

    def reply(self, timeout_s: float) -> Any:
        """The hub's answer to the last command, or `BenchError`."""
        if not self.conn.poll(timeout_s):
            raise BenchError(f"the hub process did not answer within {timeout_s:g} s")
        status, value = self.conn.recv()
        if status == "error":
            raise BenchError(f"the hub failed: {value}")
        return value

    def ask(self, command: str, payload: Any, timeout_s: float) -> Any:
        """Send a command and wait for its answer."""
        self.conn.send((command, payload))
        return self.reply(timeout_s)

    def stop(self) -> None:
        """Stop the hub and its process."""
        if self.process.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(("stop", None))
            self.process.join(60)
        if self.process.is_alive():
            self.process.kill()


def run_on(args: argparse.Namespace, broker_url: str, tmp: Path, broker_pid: int | None) -> dict[str, Any]:
    from hub.config import HubSettings

    address = BrokerAddress.from_url(broker_url)
    waits = {"chunk_wave_wait_s": args.wave_wait} if "chunk_wave_wait_s" in HubSettings.model_fields else {}
    if "retained_chunks_max" in HubSettings.model_fields:  # (a hub from before retained chunks has no such setting)
        waits["retained_chunks_max"] = args.retained_chunks_max
    settings = HubSettings(
        data_dir=tmp / "hub",
        database_url=args.database_url,
        broker_url=broker_url,
        chunk_size=args.chunk_kb * 1024,
        rebroadcast_window_s=args.rebroadcast_window,
        chunk_gather_s=args.gather,
        **waits,  # (a hub from before waves waited for their devices has no such setting)
    )
    run_id = secrets.token_hex(3)
    ids = [f"bench-{run_id}-{i:04d}" for i in range(args.devices)]
    hub = HubProcess(settings.model_dump_json(), args.bundle_kb * 1024, ids)
    fleet = SimFleet([(address.host, address.port)], max_pending=25, heartbeat_s=0)
    fanout = Fanout()
    fleet.on_other = fanout.received
    publisher = fanout_publisher(address)
    try:
        installed_json, new_sha = hub.reply(300)
        installed = InstalledModel.model_validate_json(installed_json)
        t0 = time.perf_counter()
        devices = [
            SimDevice(
                d,
                TARGET,
                installed,
                fleet,
                chunk_timeout_s=args.chunk_timeout,
                ask_after_s=args.ask_after,
                verify=False,
                keepalive_s=300,
            )
            for d in ids
        ]
        fleet.start(devices)
        if not fleet.wait_for(lambda f: f.ready >= args.devices, 120):
            raise BenchError(f"only {fleet.ready} of {args.devices} devices connected in 120 s")
        connect_s = time.perf_counter() - t0
        if not hub.ask("ready", 300, 330):
            raise BenchError("the hub did not see every device's retained state in 300 s")
        cpu = {"devices": time.process_time(), "broker": cpu_seconds(broker_pid)}
        rollout = hub.ask(
            "rollout",
            {"waves": args.waves, "rollout_id": f"bench-{run_id}", "timeout_s": args.timeout},
            args.timeout + 60,
        )
        cpu = {"devices": time.process_time() - cpu["devices"], "broker": cpu_seconds(broker_pid) - cpu["broker"]}
        snapshot = RolloutSnapshot.model_validate_json(rollout["snapshot"])
        duration, egress, bundle = rollout["seconds"], rollout["egress_bytes"], rollout["bundle_bytes"]
        done = [h for h in snapshot.history if h.event.value in ("wave_complete", "last_wave_complete")]
        on_version = sum(1 for d in fleet.devices if d.installed is not None and d.installed.sha256 == new_sha)
        chunks = math.ceil(bundle / (args.chunk_kb * 1024))
        waves = {r.device_id: r.wave for r in snapshot.devices.values() if r.wave is not None}
        sizes = [sum(1 for w in waves.values() if w == wave) for wave in range(max(waves.values(), default=-1) + 1)]
        ticks = rollout["ticks"]

        timeline = wave_timeline(fleet, waves, [h.at for h in done], rollout["start_wall"], chunks)
        # The broker alone delivering the same chunks to the same waves, wave after wave.
        subscribe_waves(fleet, waves, 120)
        fanout_cpu = {"devices": time.process_time(), "broker": cpu_seconds(broker_pid)}
        rounds = [
            measure_fanout(publisher, fanout, sizes, args.chunk_kb * 1024, chunks) for _ in range(args.fanout_rounds)
        ]
        fanout_cpu = {
            "devices": (time.process_time() - fanout_cpu["devices"]) / len(rounds),
            "broker": (cpu_seconds(broker_pid) - fanout_cpu["broker"]) / len(rounds),
        }
        fanout_seconds = statistics.median(sum(r) for r in rounds)
        return {
            "wall_over_fanout": round(duration / fanout_seconds, 2),
            "egress_bundles_per_wave": round(egress / bundle / max(1, len(done)), 2),
            "rollout_seconds": round(duration, 3),
            "fanout_seconds_same_bytes": round(fanout_seconds, 3),
            "state": snapshot.state.value,
            "database": args.database,
            "devices": args.devices,
            "devices_on_version": on_version,
            "waves": args.waves,
            "wave_sizes": sizes,
            "where_the_time_goes_s": where_time_goes(timeline),
            "cpu_seconds_during_rollout": {
                "hub": round(rollout["cpu_seconds"], 2),
                "devices": round(cpu["devices"], 2),
                "broker": round(cpu["broker"], 2),
            },
            "cpu_seconds_during_one_fanout": {k: round(v, 2) for k, v in fanout_cpu.items()},
            "waves_timeline": timeline,
            "engine_ticks": len(ticks),
            "engine_tick_seconds": round(sum(t for _, t in ticks), 3),
            "engine_ticks_at_s": [[round(at - rollout["start_wall"], 3), round(t, 3)] for at, t in ticks],
            "engine_tick_phases_s": rollout["tick_phases"],
            "devices_per_s": round(on_version / duration, 1),
            "bundle_bytes": bundle,
            "chunk_bytes": args.chunk_kb * 1024,
            "chunks_per_bundle": chunks,
            "chunk_broadcasts": rollout["broadcasts"],
            "hub_egress_bytes": egress,
            "hub_egress_bundles": round(egress / bundle, 2),
            "unicast_egress_bytes_would_be": bundle * on_version,
            "chunk_gather_s": args.gather,
            "chunk_wave_wait_s": args.wave_wait,
            "retained_chunks_max": args.retained_chunks_max,
            "rebroadcast_window_s": args.rebroadcast_window,
            "chunk_timeout_s": args.chunk_timeout,
            "ask_after_s": args.ask_after,
            "connect_seconds": round(connect_s, 2),
            "broker_fanout": {
                "qos": 1,
                "rounds": len(rounds),
                "seconds_per_wave": [[round(t, 4) for t in r] for r in rounds],
                "deliveries_per_s": round(sum(sizes) * chunks / fanout_seconds, 1),
            },
        }
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        fleet.stop()
        hub.stop()
        if fleet.error is not None:
            raise BenchError(f"the device simulator failed: {fleet.error!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--bundle-kb", type=int, default=256)
    parser.add_argument("--chunk-kb", type=int, default=64)
    parser.add_argument("--waves", default="10,50,100")
    parser.add_argument("--rebroadcast-window", type=float, default=2.0)
    parser.add_argument("--chunk-timeout", type=float, default=2.0)
    parser.add_argument("--gather", type=float, default=0.3, help="hub: a request outside a wave waits this long")
    parser.add_argument("--wave-wait", type=float, default=3.0, help="hub: a wave's broadcast waits at most this long")
    parser.add_argument(
        "--retained-chunks-max", type=int, default=512, help="hub: retained chunks up to this many (0: broadcast)"
    )
    parser.add_argument("--ask-after", type=float, default=0.0, help="device's first ask waits this long")
    parser.add_argument("--fanout-rounds", type=int, default=3, help="reference fan-out runs (median kept)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--broker-url", default=None, help="default: a private mosquitto started for the run")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite", help="the hub's registry")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()
    try:
        measured = run(args)
    except BenchError as exc:
        raise SystemExit(f"bench_rollout: {exc}") from None
    result = {
        "bench": "rollout",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "broker": args.broker_url,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        **measured,
        "goal": "wall_over_fanout <= 1.5, egress_bundles_per_wave <= 1.2",
        "goal_met": measured["wall_over_fanout"] <= 1.5 and measured["egress_bundles_per_wave"] <= 1.2,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
