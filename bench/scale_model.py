"""The cost model and the 1,000,000-device estimate of `bench_scale.py`, from its measured runs (pure arithmetic,
no I/O): each cost fitted as ``a + b * devices`` through two fleet sizes, with the growth exponent beside it, and
each component's load at a million devices set against what one instance of it was measured to do."""

from __future__ import annotations

import math
from typing import Any

MILLION = 1_000_000


def _sum(processes: dict[str, dict[str, float]], prefix: str, key: str) -> float:
    return sum(v[key] for name, v in processes.items() if name.startswith(prefix))


def _max(processes: dict[str, dict[str, float]], prefix: str, key: str) -> float:
    return max((v[key] for name, v in processes.items() if name.startswith(prefix)), default=0.0)


def costs(run: dict[str, Any]) -> dict[str, float]:
    """The costs the model fits, from one run of `bench_scale.measure`."""
    phases = run["processes"]
    return {
        "connect_wall_s": run["connect"]["seconds_to_online_in_registry"],
        "rollout_wall_s": run["rollout"]["wall_s"],
        "hub_cpu_s_connect": _sum(phases["connect"], "hub", "cpu_s"),
        "hub_cpu_s_telemetry": _sum(phases["telemetry"], "hub", "cpu_s"),
        "hub_cpu_s_rollout": _sum(phases["rollout"], "hub", "cpu_s"),
        "leader_cpu_s_rollout": _max(phases["rollout"], "hub", "cpu_s"),
        "broker_cpu_s_whole_run": _sum(phases["whole_run"], "nats", "cpu_s")
        + _sum(phases["whole_run"], "mosq", "cpu_s"),
        "hub_peak_rss_mib_max_replica": _max(phases["whole_run"], "hub", "peak_rss_mib"),
        "broker_peak_rss_mib_all_nodes": _sum(phases["whole_run"], "nats", "peak_rss_mib")
        + _sum(phases["whole_run"], "mosq", "peak_rss_mib"),
        "db_bytes_per_device_per_day": run["telemetry"]["db_bytes_per_device_per_day"],
    }


def fit(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """``cost = a + b * devices`` through the two runs, per cost, with ``exponent`` = log(c2/c1) / log(n2/n1)
    (1: linear, 0: flat) and the cost per device at the larger size."""
    n1, n2 = small["devices"], large["devices"]
    c1, c2 = costs(small), costs(large)
    out: dict[str, Any] = {}
    for name in c1:
        slope = (c2[name] - c1[name]) / (n2 - n1)
        exponent = math.log(c2[name] / c1[name]) / math.log(n2 / n1) if c1[name] > 0 and c2[name] > 0 else None
        out[name] = {
            f"at_{n1}": round(c1[name], 3),
            f"at_{n2}": round(c2[name], 3),
            "a": round(c1[name] - slope * n1, 4),
            "b_per_device": round(slope, 7),
            "exponent": round(exponent, 2) if exponent is not None else None,
        }
    return out


def estimate_million(large: dict[str, Any], model: dict[str, Any], qos1: dict[str, Any] | None) -> dict[str, Any]:
    """A paper estimate for 1,000,000 devices from the larger run and the fitted model.

    ``sustained``: loads a fleet puts on the system every second, forever (telemetry, heartbeats, connections);
    ``factor`` is the load at 1,000,000 devices over what this setup was measured to carry (a lower bound of its
    capacity where it kept up). The largest factor breaks first: a sustained load over capacity never catches
    up. ``per_event``: work done once per rollout or reconnection, which at 1,000,000 takes longer but ends."""
    n = large["devices"]
    tel = large["telemetry"]
    interval = tel["agent_telemetry_interval_s"]
    nodes = large["broker_nodes"]
    rollout = large["rollout"]
    heartbeat_s = tel.get("agent_heartbeat_interval_s", 30.0)

    batches = MILLION / interval
    measured = tel["ingest_batches_per_s"]
    kept_up = measured >= 0.95 * tel["offered_per_s"]
    pg_bytes = batches * tel["db_bytes_per_batch"]
    rss = model["broker_peak_rss_mib_all_nodes"]
    sustained = [
        {
            "component": "telemetry ingest: hub replicas decoding and PostgreSQL storing batches (one primary)",
            "need_at_1M": f"{MILLION:,} devices / {interval:g} s = {batches:,.0f} batches/s; x "
            f"{tel['db_bytes_per_batch']:,} B stored per batch = {pg_bytes / 2**20:,.0f} MiB/s, "
            f"{pg_bytes * 86400 / 2**40:,.1f} TiB/day",
            "measured": f"{measured:,.0f} batches/s stored at {n:,} devices (offered {tel['offered_per_s']:,.0f}/s; "
            + ("kept up: a lower bound of capacity)" if kept_up else "fell behind: the capacity of this setup)"),
            "factor": round(batches / measured, 1),
        },
        {
            "component": "heartbeats: one device-row UPDATE each in PostgreSQL",
            "need_at_1M": f"{MILLION:,} / {heartbeat_s:g} s = {MILLION / heartbeat_s:,.0f} row updates/s",
            "measured": f"{n / heartbeat_s:,.0f}/s carried at {n:,} devices, beside the other loads",
            "factor": round(MILLION / n, 1),
        },
        {
            "component": f"broker connections and memory ({nodes} nodes)",
            "need_at_1M": f"{MILLION // nodes:,} connections per node (NATS default max_connections 65,536); "
            f"{rss['b_per_device'] * 1024:.1f} KiB/device x {MILLION:,} = "
            f"{(rss['a'] + rss['b_per_device'] * MILLION) / 1024:,.1f} GiB over the nodes",
            "measured": f"{n // nodes:,} connections per node, {rss[f'at_{n}']:,.0f} MiB over the nodes",
            "factor": round(MILLION / n, 1),
        },
    ]
    leader, wall = model["leader_cpu_s_rollout"], model["rollout_wall_s"]
    bundle = rollout["bundle_bytes"]
    per_event = [
        {
            "component": "a rollout's wall time (the leader publishes each order, retained, then waits for waves)",
            "at_1M": f"{wall['a']:.1f} s + {wall['b_per_device'] * 1000:.2f} ms x {MILLION:,} = "
            f"{(wall['a'] + wall['b_per_device'] * MILLION) / 3600:,.1f} h (growth exponent {wall['exponent']})",
        },
        {
            "component": "the leader's rollout engine CPU (one replica steps every device)",
            "at_1M": f"{leader['a']:.1f} + {leader['b_per_device'] * 1000:.2f} ms x {MILLION:,} = "
            f"{leader['a'] + leader['b_per_device'] * MILLION:,.0f} CPU s per rollout on one core "
            f"(growth exponent {leader['exponent']})",
        },
        {
            "component": "bundle bytes the broker delivers (MQTT chunk broadcast; the hub sends one bundle per wave)",
            "at_1M": f"{MILLION:,} x {bundle / 1024:.0f} KiB = {MILLION * bundle / 2**30:,.0f} GiB per rollout",
        },
    ]
    if qos1 is not None:
        per_s = qos1["devices_per_s"]
        per_event.append(
            {
                "component": "QoS 1 subscriptions on NATS (a JetStream consumer each; the agent has 3, 5 while "
                "downloading)",
                "at_1M": f"{MILLION:,} devices / {per_s:,.1f} per s = {MILLION / per_s / 3600:,.1f} h for the fleet "
                f"to resubscribe after a broker restart; {qos1['broker_cpu_s_per_device'] * MILLION / 3600:,.0f} "
                "broker CPU hours",
            }
        )
    first = max(sustained, key=lambda c: c["factor"])
    return {
        "sustained": sustained,
        "per_event": per_event,
        "breaks_first": first["component"],
        "why": f"the largest sustained factor ({first['factor']:,}x what this setup carried); a sustained load "
        "over capacity never catches up, a per-event one only takes longer",
    }
