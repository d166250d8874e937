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
    """Each component's load at 1,000,000 devices against what was measured of it; the component with the largest
    ratio breaks first. Every number is derived in the JSON from the runs (``arithmetic``)."""
    n = large["devices"]
    tel = large["telemetry"]
    interval = tel["agent_telemetry_interval_s"]
    replicas = large["hub_replicas"]
    nodes = large["broker_nodes"]
    rollout = large["rollout"]
    components: list[dict[str, Any]] = []

    # PostgreSQL: telemetry rows written per second and bytes per day
    batches_per_s = MILLION / interval
    pg_bytes_per_s = batches_per_s * tel["db_bytes_per_batch"]
    measured_rate = tel["ingest_batches_per_s"]
    components.append(
        {
            "component": "hub ingest + PostgreSQL telemetry writes",
            "load_at_1M": f"{MILLION:,} devices / {interval:g} s = {batches_per_s:,.0f} batches/s, "
            f"{pg_bytes_per_s / 2**20:,.0f} MiB/s of table growth ({pg_bytes_per_s * 86400 / 2**40:,.1f} TiB/day)",
            "measured": f"{measured_rate:,.0f} batches/s stored by {replicas} replicas at {n:,} devices "
            f"(offered {tel['offered_per_s']:,.0f}/s)",
            "ratio": round(batches_per_s / measured_rate, 1),
        }
    )
    # The leader's rollout engine: CPU per device per rollout, on one replica
    leader = model["leader_cpu_s_rollout"]
    leader_1m = leader["a"] + leader["b_per_device"] * MILLION
    components.append(
        {
            "component": "the leader's rollout engine (one replica steps every device)",
            "load_at_1M": f"{leader['a']:.1f} + {leader['b_per_device'] * 1000:.2f} ms x {MILLION:,} = "
            f"{leader_1m:,.0f} CPU s per rollout on one core",
            "measured": f"{leader[f'at_{n}']:.1f} CPU s at {n:,} devices (exponent {leader['exponent']})",
            "ratio": round(leader_1m / max(1e-9, leader[f"at_{n}"]), 1),
        }
    )
    # The broker: connections and memory per node, retained writes
    rss = model["broker_peak_rss_mib_all_nodes"]
    rss_1m = rss["a"] + rss["b_per_device"] * MILLION
    components.append(
        {
            "component": f"broker connections and memory ({nodes} nodes)",
            "load_at_1M": f"{MILLION // nodes:,} connections per node; {rss['b_per_device'] * 1024:.1f} KiB/device x "
            f"{MILLION:,} = {rss_1m / 1024:,.1f} GiB over the nodes",
            "measured": f"{n // nodes:,} connections per node, {rss[f'at_{n}']:,.0f} MiB over the nodes",
            "ratio": round(MILLION / n, 1),
        }
    )
    if qos1 is not None:
        per_s = qos1["devices_per_s"]
        components.append(
            {
                "component": "NATS JetStream consumers for QoS 1 subscriptions (the agent's 3 per device, 5 in an "
                "update)",
                "load_at_1M": f"{MILLION:,} devices reconnecting at {per_s:,.1f}/s = "
                f"{MILLION / per_s / 3600:,.1f} h for the fleet to resubscribe",
                "measured": f"{qos1['devices']} devices subscribing at QoS 1: {per_s:,.1f} devices/s, "
                f"{qos1['broker_cpu_s_per_device'] * 1000:.0f} ms of broker CPU each",
                "ratio": round(MILLION / per_s / max(1.0, large["connect"]["seconds_to_subscribed"]), 1),
            }
        )
    wall = model["rollout_wall_s"]
    wall_1m = wall["a"] + wall["b_per_device"] * MILLION
    components.append(
        {
            "component": "rollout wall time (orders published one by one, retained, by the leader)",
            "load_at_1M": f"{wall['a']:.1f} + {wall['b_per_device'] * 1000:.2f} ms x {MILLION:,} = "
            f"{wall_1m / 3600:,.1f} h",
            "measured": f"{rollout['wall_s']:.0f} s at {n:,} devices",
            "ratio": round(wall_1m / max(1e-9, rollout["wall_s"]), 1),
        }
    )
    bundle = rollout["bundle_bytes"]
    components.append(
        {
            "component": "bundle egress through the broker (MQTT chunk broadcast)",
            "load_at_1M": f"{MILLION:,} x {bundle / 1024:.0f} KiB = {MILLION * bundle / 2**30:,.0f} GiB delivered by "
            "the broker per rollout (the hub sends one bundle per wave)",
            "measured": f"{n * bundle / 2**30:.2f} GiB at {n:,} devices",
            "ratio": round(MILLION / n, 1),
        }
    )
    first = max(components, key=lambda c: c["ratio"])
    return {
        "components": components,
        "breaks_first": first["component"],
        "why": "the largest ratio of load at 1,000,000 devices to what the measured setup did",
    }
