"""The Grafana dashboard (deploy/grafana/) queries only metrics the hub exports on /metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from hub.api import create_app
from hub.app import Hub
from hub.config import HubSettings

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "edgefleet-hub.json"
_SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _exported(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry's families can produce (counters as ``_total``, histogram series)."""
    return {
        family.name + suffix for family in registry.collect() for suffix in _SAMPLE_SUFFIXES.get(family.type, ("",))
    }


def test_every_queried_metric_is_one_the_hub_exports(tmp_path: Path) -> None:
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))
    try:
        create_app(hub)  # registers the serving metrics on the hub's registry too
        exported = _exported(hub.monitoring.prometheus)
    finally:
        hub.db.close()
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in queries for name in re.findall(r"\bedgefleet_\w+", expr)}
    assert len(used) >= 15 and used <= exported, sorted(used - exported)


def test_panels_have_unique_ids_and_a_prometheus_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["datasource"]["type"] == "prometheus" for panel in dashboard["panels"])
