"""End to end on real brokers (embedded and Mosquitto): publish, deploy, serve, report, refuse bad bundles."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import httpx
import numpy as np
import pytest

from hub.bundles.tuf_repository import TufRepository
from tests.integration.fleet_harness import Harness
from tests.waiting import wait_until


def _predict_version(agent, x: np.ndarray) -> str:  # type: ignore[no-untyped-def]
    return str(agent.service.predict(x.tolist())["version"])


def test_model_reaches_devices_serves_and_reports_telemetry(harness: Harness) -> None:
    published = harness.publish("1.0.0")
    agents = [harness.agent("a", http_port=0), harness.agent("b")]
    states = harness.deploy("1.0.0", agents)
    assert set(states.values()) == {"done"}
    x, y = harness.trained.test_x, harness.trained.test_y
    # Python API on one device, local HTTP on the other.
    answer = agents[1].service.predict(x[:8].tolist())
    assert answer["version"] == "1.0.0" and len(answer["predictions"]) == 8
    api = agents[0].api
    assert api is not None
    response = httpx.post(f"{api.url}/v1/predict", json={"inputs": x[:20].tolist()})
    body = response.json()
    assert response.status_code == 200 and body["version"] == "1.0.0"
    agreement = np.mean([int(p["label"]) for p in body["predictions"]] == y[:20])
    assert agreement >= 0.85
    bad = httpx.post(f"{api.url}/v1/predict", json={"inputs": [[1.0, 2.0]]})
    assert bad.status_code == 400 and "does not match model input" in bad.json()["error"]
    for agent in agents:
        assert agent.flush_telemetry() == 1
    assert harness.hub.ingestor is not None
    assert harness.hub.ingestor.wait_stored(len(agents), timeout_s=30)
    batches = harness.hub.registry.telemetry_batches("digits", "1.0.0")
    assert {b.device_id for b in batches} == {a.config.device_id for a in agents}
    by_device = {b.device_id: b for b in batches}
    assert by_device[agents[1].config.device_id].requests == 1
    assert sum(by_device[agents[1].config.device_id].predictions.values()) == 8
    assert by_device[agents[0].config.device_id].errors == 1
    assert len(by_device[agents[1].config.device_id].feature_sketches) == 64
    device = harness.hub.registry.get_device(agents[0].config.device_id)
    assert device.online and device.active_version == "1.0.0" and device.active_sha256 == published.bundle_sha256


def test_wave_costs_about_one_bundle_of_egress(harness: Harness) -> None:
    published = harness.publish("1.0.0")
    agents = [harness.agent(f"w{i}") for i in range(4)]
    assert harness.hub.transfer is not None and harness.hub.orders is not None
    before = harness.hub.transfer.egress_bytes
    assert set(harness.deploy("1.0.0", agents).values()) == {"done"}
    egress = harness.hub.transfer.egress_bytes - before
    bundle = harness.hub.store.size(published.bundle_sha256)
    # Chunk frames for one copy of the bundle plus small metadata replies; four unicast copies would be >4x.
    assert egress < 2.5 * bundle, (egress, bundle)


def test_tampered_bundle_is_refused_and_previous_model_keeps_serving(harness: Harness) -> None:
    harness.publish("1.0.0")
    agent = harness.agent("t")
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    v2 = harness.publish("1.1.0")
    good = harness.hub.store.read(v2.bundle_sha256)
    tampered = bytearray(good)
    tampered[len(tampered) // 2] ^= 0xFF
    tampered_sha = harness.hub.store.put_bytes(bytes(tampered))
    assert harness.hub.transfer is not None and harness.hub.orders is not None
    # An attacker who can place bytes and an order cannot get them past the signed length and hash.
    order = harness.hub.orders.order_for(
        "dep-tampered",
        tampered_sha,
        model="digits",
        version="1.1.0",
        target=agent.config.target,
        tuf_target=v2.tuf_target,
    )
    harness.hub.orders.send(agent.config.device_id, order)
    assert agent.wait_for_deployment("dep-tampered", 60).value == "failed"
    assert "tampered" in harness.detail(agent)
    assert _predict_version(agent, harness.trained.test_x[:1]) == "1.0.0"
    assert not any(agent.data_dir.joinpath("downloads").glob(f"{tampered_sha}*"))


def test_expired_metadata_is_refused_and_previous_model_keeps_serving(harness: Harness) -> None:
    harness.publish("1.0.0")
    agent = harness.agent("e")
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    # Re-open the hub's repository with a clock two days behind: the new timestamp is already expired.
    stale = TufRepository(harness.hub.tuf.root_dir, clock=lambda: _now() - timedelta(days=2))
    harness.hub.tuf = stale
    assert harness.hub.transfer is not None and harness.hub.orders is not None
    harness.hub.transfer.tuf = stale
    harness.publish("1.1.0")
    states = harness.deploy("1.1.0", [agent])
    assert set(states.values()) == {"failed"}
    assert "expired" in harness.detail(agent)
    assert _predict_version(agent, harness.trained.test_x[:1]) == "1.0.0"


def test_older_version_is_refused_unless_the_order_allows_a_downgrade(harness: Harness) -> None:
    harness.publish("1.0.0")
    harness.publish("1.1.0")
    agent = harness.agent("r")
    assert set(harness.deploy("1.1.0", [agent]).values()) == {"done"}
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"failed"}
    assert "older than the running 1.1.0" in harness.detail(agent)
    assert _predict_version(agent, harness.trained.test_x[:1]) == "1.1.0"
    assert set(harness.deploy("1.0.0", [agent], allow_downgrade=True).values()) == {"done"}
    assert _predict_version(agent, harness.trained.test_x[:1]) == "1.0.0"


def test_failing_self_test_rolls_back(harness: Harness) -> None:
    harness.publish("1.0.0")
    wrong = harness.trained.golden_logits[:, ::-1].copy()
    harness.publish("1.1.0", golden_outputs=wrong)
    agent = harness.agent("s")
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    assert set(harness.deploy("1.1.0", [agent]).values()) == {"failed"}
    assert "self-test failed" in harness.detail(agent) and "rolled back" in harness.detail(agent)
    assert _predict_version(agent, harness.trained.test_x[:1]) == "1.0.0"


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(microsecond=0)


@pytest.mark.parametrize("payload", [b"", b"not json", b'{"schema_version": 99}', b"x" * 600_000])
def test_malformed_deployment_orders_are_ignored(harness: Harness, payload: bytes) -> None:
    harness.publish("1.0.0")
    agent = harness.agent("m")
    assert harness.hub.broker is not None
    from fleet.wire import topics

    harness.hub.broker.publish(topics.device_topic(agent.config.device_id, "deployment"), payload, retain=True)
    # The agent keeps working: a valid order after the bad one is applied.
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}


@pytest.mark.parametrize("role", ["root", "targets", "timestamp"])
def test_devices_follow_signing_key_rotation(harness: Harness, role: str) -> None:
    harness.publish("1.0.0")
    agent = harness.agent(f"rot-{role}")
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    new_root_version = harness.hub.tuf.rotate_key(role)
    assert new_root_version == 2
    harness.publish("1.1.0")
    assert set(harness.deploy("1.1.0", [agent]).values()) == {"done"}, harness.detail(agent)
    assert _predict_version(agent, harness.trained.test_x[:1]) == "1.1.0"
    assert (agent.data_dir / "tuf" / "root_history" / "2.root.json").exists()


def test_streaming_api_answers_each_line_and_names_bad_lines(harness: Harness) -> None:
    harness.publish("1.0.0")
    agent = harness.agent("st", http_port=0)
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    assert agent.api is not None
    rows = [harness.trained.test_x[i].tolist() for i in range(3)]
    body = "\n".join([*(json.dumps(r) for r in rows[:2]), "not json", json.dumps(rows[2])]) + "\n"
    response = httpx.post(f"{agent.api.url}/v1/predict/stream", content=body)
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert response.headers["content-type"] == "application/x-ndjson" and len(lines) == 4
    assert [line.get("version") for line in lines] == ["1.0.0", "1.0.0", None, "1.0.0"]
    assert lines[2]["error"].startswith("line 3:")


def test_order_for_another_target_is_refused(harness: Harness) -> None:
    harness.publish("1.0.0")
    agent = harness.agent("wt")
    published = harness.hub.registry.list_variants("digits", "1.0.0")[0]
    assert harness.hub.transfer is not None and harness.hub.orders is not None
    order = harness.hub.orders.order_for(
        "dep-wrong-target",
        published.bundle_sha256,
        model="digits",
        version="1.0.0",
        target="rpi4-arm64",
        tuf_target=published.tuf_target,
    )
    events: list[str] = []
    done = threading.Event()

    def listen(event) -> None:  # type: ignore[no-untyped-def]
        if event.deployment_id == "dep-wrong-target":
            events.append(event.detail)
            done.set()

    harness.hub.on_update_event(listen)
    harness.hub.orders.send(agent.config.device_id, order)
    assert done.wait(30)
    assert "order is for target rpi4-arm64, this device is x86-onnx-cpu" in events[0]
    assert agent.service.model is None


def test_last_will_marks_a_vanished_device_offline(harness: Harness) -> None:
    agent = harness.agent("lw", start=True)
    device_id = agent.config.device_id
    assert agent.broker is not None
    client = agent.broker._client
    # Wait until the hub saw it online, then cut the socket without a DISCONNECT (as a power cut would).
    assert wait_until(lambda: harness.hub.registry.get_device(device_id).online, 30)  # state comes over the broker
    agent._stopping.set()
    client.loop_stop()
    client.socket().close()
    # the broker publishes the will once it notices the dead connection
    assert wait_until(lambda: not harness.hub.registry.get_device(device_id).online, 60)
    harness.agents.remove(agent)
