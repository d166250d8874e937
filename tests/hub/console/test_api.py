"""Console routes (hub/console/api.py and mount.py) on a started hub: data for the pages, errors, offline docs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from hub.auth import Role
from tests.hub.auth.clients import api_client
from tests.hub.console.console_fleet import ROLLOUT_ID, ConsoleFleet, console_fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    with console_fleet(tmp_path_factory.mktemp("console-api")) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def client(fleet: ConsoleFleet) -> TestClient:
    return api_client(fleet.hub, Role.OPERATOR)


def test_fleet_counts_match_the_registry(client: TestClient, fleet: ConsoleFleet) -> None:
    summary = client.get("/console/api/fleet").json()
    devices = fleet.hub.registry.list_devices()
    assert summary["total"] == len(devices) and sum(summary["by_target"].values()) == len(devices)


def test_device_telemetry_covers_only_the_hours_asked(client: TestClient, fleet: ConsoleFleet) -> None:
    device = fleet.device_with_telemetry()
    windows = sorted(b.window_end for b in fleet.batches if b.device_id == device)
    series = client.get(f"/console/api/devices/{device}/telemetry", params={"hours": 2}).json()["series"]
    assert series["t"] == pytest.approx(windows)
    recent = set(client.get(f"/console/api/devices/{device}/telemetry", params={"hours": 0.01}).json()["series"]["t"])
    now = time.time()
    assert {t for t in windows if t > now} <= recent  # windows ending within the 36 s asked (or later) stay
    assert not {t for t in windows if t < now - 60} & recent  # older ones are left out
    assert client.get("/console/api/devices/nope/telemetry").status_code == 404
    assert client.get(f"/console/api/devices/{device}/telemetry", params={"hours": -1}).status_code == 422


def test_device_history_lists_the_rollout_that_reached_it(client: TestClient, fleet: ConsoleFleet) -> None:
    rollout = client.get(f"/rollouts/{ROLLOUT_ID}").json()
    assert rollout["totals"]["dispatched"] > 0
    reached = [d.device_id for d in fleet.hub.registry.deployment_devices(ROLLOUT_ID)]
    assert reached  # the canary wave's orders went out
    history = client.get(f"/console/api/devices/{reached[0]}/history").json()
    assert [h["deployment_id"] for h in history] == [ROLLOUT_ID]


def test_rollout_timeline_keeps_reasons_and_actions(client: TestClient) -> None:
    timeline = client.get(f"/console/api/rollouts/{ROLLOUT_ID}/timeline").json()
    assert timeline["transitions"][0]["event"] == "start" and "device(s)" in timeline["transitions"][0]["reason"]
    assert any(a["kind"] == "deploy" and a["devices"] > 0 for a in timeline["actions"])
    assert client.get("/console/api/rollouts/nope/timeline").status_code == 404


def test_models_carry_variants_with_conversion_metrics(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/console/api/models").json()}
    (version,) = models["keywords"]["versions"]
    variants = {v["target"]: v for v in version["variants"]}
    assert variants["rpi4-arm64"]["metrics"]["accuracy"] == 0.912 and variants["rpi4-arm64"]["precision"] == "int8"
    assert variants["jetson-orin"]["size_bytes"] > 0


def test_distributions_of_an_unknown_version_are_404(client: TestClient) -> None:
    assert client.get("/console/api/models/digits/versions/1.1.0/distributions").status_code == 200
    assert client.get("/console/api/models/digits/versions/9.9.9/distributions").status_code == 404


def test_docs_and_console_load_nothing_from_other_hosts(client: TestClient) -> None:
    for page in ("/docs", "/ui"):
        html = client.get(page).text
        assert not re.search(r"(src|href)=['\"]?(https?:)?//", html), page
        for asset in re.findall(r"(?:src|href)=['\"]?(/ui/static/[^'\" >]+)", html):
            assert client.get(asset).status_code == 200, asset
    assert client.get("/redoc").status_code == 404  # ReDoc needs a CDN: off
    assert client.get("/openapi.json").json()["info"]["title"] == "EdgeFleet hub"
