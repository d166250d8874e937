"""The agent under failure: killed at every update state, corrupt chunks, garbage on its topics,
a broker that dies mid-download, and a device offline for a while."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent.daemon as agent_daemon
from agent.daemon import Agent
from fleet.wire import topics
from fleet.wire.messages import UpdateState, encode_chunk
from hub.demo.model import TrainedDigits
from tests.integration.fleet_harness import Harness, start_hub
from tests.integration.private_mosquitto import PrivateMosquitto
from tests.waiting import wait_until


class Crash(BaseException):
    """Stands in for a power cut: not an error the agent could handle."""


def _crash_at(state: UpdateState) -> object:
    fired = threading.Event()

    def hook(current: UpdateState) -> None:
        if current == state and not fired.is_set():
            fired.set()
            raise Crash(state)

    hook.fired = fired  # type: ignore[attr-defined]
    return hook


def _power_cut(agent: Agent) -> None:
    """Drop the agent without any goodbye: no offline state, no flush; its threads end."""
    agent._stopping.set()
    agent._orders.put(agent_daemon._STOP)
    assert agent.broker is not None
    agent.broker.close()
    for thread in agent._threads:
        thread.join(timeout=10)
    agent._threads.clear()


@pytest.mark.parametrize(
    "state",
    [UpdateState.DOWNLOAD, UpdateState.VERIFY, UpdateState.INSTALL, UpdateState.HEALTH_CHECK, UpdateState.COMMIT],
)
def test_killed_at_any_state_resumes_to_the_new_model(harness: Harness, state: UpdateState) -> None:
    harness.publish("1.0.0")
    v2 = harness.publish("1.1.0")
    first = harness.agent("k")
    assert set(harness.deploy("1.0.0", [first]).values()) == {"done"}
    harness.agents.remove(first)
    _power_cut(first)
    hook = _crash_at(state)
    agent = Agent(first.config, before_step=hook)  # type: ignore[arg-type]
    agent.start()
    deployment = harness.hub.deploy("digits", "1.1.0", [agent.config.device_id])
    assert hook.fired.wait(30)  # type: ignore[attr-defined]
    _power_cut(agent)
    saved = agent.store.load()
    assert saved.update is not None and saved.update.state == state
    assert saved.active is not None and saved.active.version == "1.0.0"  # never half-installed
    restarted = harness.agent_from(agent.config)
    assert restarted.wait_for_deployment(deployment.id, 60) == UpdateState.DONE
    assert restarted.service.predict(harness.trained.test_x[:1].tolist())["version"] == "1.1.0"
    final = restarted.store.load()
    assert final.active is not None and final.active.sha256 == v2.bundle_sha256
    assert final.last_known_good is not None and final.last_known_good.version == "1.0.0"


def test_killed_during_rollback_reverts_to_the_previous_model(harness: Harness) -> None:
    harness.publish("1.0.0")
    harness.publish("1.1.0", golden_outputs=harness.trained.golden_logits[:, ::-1].copy())
    first = harness.agent("rb")
    assert set(harness.deploy("1.0.0", [first]).values()) == {"done"}
    harness.agents.remove(first)
    _power_cut(first)
    hook = _crash_at(UpdateState.ROLLBACK)
    agent = Agent(first.config, before_step=hook)  # type: ignore[arg-type]
    agent.start()
    deployment = harness.hub.deploy("digits", "1.1.0", [agent.config.device_id])
    assert hook.fired.wait(30)  # type: ignore[attr-defined]
    _power_cut(agent)
    restarted = harness.agent_from(agent.config)
    assert restarted.wait_for_deployment(deployment.id, 60) == UpdateState.FAILED
    assert restarted.service.predict(harness.trained.test_x[:1].tolist())["version"] == "1.0.0"


def test_corrupt_chunks_are_dropped_and_fetched_again(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    import hub.bundles.transfer as transfer_module

    harness.publish("1.0.0")
    corrupted: list[int] = []

    def corrupting(sha256: str, index: int, count: int, data: bytes) -> bytes:
        frame = encode_chunk(sha256, index, count, data)
        if not corrupted:
            corrupted.append(index)
            return frame[:-1] + bytes([frame[-1] ^ 0xFF])
        return frame

    monkeypatch.setattr(transfer_module, "encode_chunk", corrupting)
    agent = harness.agent("c")
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    assert corrupted and agent.updater is not None
    assert agent.updater.downloader.corrupt_chunks == 1


def test_garbage_on_every_agent_topic_is_survived(harness: Harness) -> None:
    published = harness.publish("1.0.0")
    agent = harness.agent("g")
    broker = harness.hub.broker
    assert broker is not None
    device = agent.config.device_id
    garbage = [
        b"",
        b"\x00\xff" * 10,
        b'{"schema_version": 1}',
        b"{" * 10_000,
        b"EFC1\xff\xff\xff\xff",
        b"x" * 2_000_000,
    ]
    for payload in garbage:
        broker.publish(topics.device_topic(device, "meta"), payload)
        broker.publish(topics.bundle_topic(published.bundle_sha256), payload)
        broker.publish(topics.device_topic(device, "deployment"), payload, retain=True)
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


def test_broker_restart_mid_download_resumes_missing_chunks_only(
    tmp_path: Path, private_broker: PrivateMosquitto, trained: TrainedDigits
) -> None:
    hub = start_hub(tmp_path, private_broker.url)
    harness = Harness(hub, tmp_path, trained)
    try:
        published = harness.publish("1.0.0")
        agent = harness.agent("b", chunk_timeout_s=0.5)
        chunks = hub.store.size(published.bundle_sha256) // hub.settings.chunk_size + 1
        seen: list[int] = []
        halfway = threading.Event()
        assert hub.broker is not None

        def count(_message: object) -> None:
            seen.append(1)
            if len(seen) == chunks // 2:
                halfway.set()

        hub.broker.subscribe(topics.bundle_topic(published.bundle_sha256), count)
        # Slow the hub down so the download is still running when the broker dies.
        hub.settings.rebroadcast_window_s = 0.0
        deployment = hub.deploy("digits", "1.0.0", [agent.config.device_id])
        if halfway.wait(30):
            private_broker.stop()
            private_broker.start()
        assert agent.wait_for_deployment(deployment.id, 90) == UpdateState.DONE, harness.detail(agent)
        assert agent.updater is not None
        assert agent.service.predict(trained.test_x[:1].tolist())["version"] == "1.0.0"
    finally:
        harness.close()


def test_offline_device_keeps_telemetry_and_sends_it_once_after_reconnecting(harness: Harness) -> None:
    harness.publish("1.0.0")
    agent = harness.agent("o")
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    assert agent.broker is not None
    link = agent.broker._client  # drop the device's link (the hub and broker stay up)
    link.disconnect()
    # paho reports the dropped link on its network thread
    assert wait_until(lambda: not agent.broker.connected, 10)
    for round_ in range(3):
        agent.service.predict(harness.trained.test_x[round_ : round_ + 2].tolist())
        assert agent.flush_telemetry() == 0  # offline: kept in the outbox, in order
    assert len(agent.outbox) == 3
    link.loop_stop()  # paho's network thread ends after an explicit disconnect; bring the link back
    link.reconnect()
    link.loop_start()
    assert agent.broker.wait_connected(30)
    assert agent.flush_telemetry() == 3
    assert agent.flush_telemetry() == 0  # sent, awaiting the hub's acknowledgement
    assert wait_until(lambda: len(agent.outbox) == 0, 30)  # deleted only once the hub stored them
    ingestor = harness.hub.ingestor
    assert ingestor is not None
    assert ingestor.wait_stored(3, timeout_s=30)
    stored = harness.hub.registry.telemetry_batches("digits", "1.0.0")
    ingestor.submit(stored[0])  # a redelivered batch is dropped by its id
    ingestor.wait_idle()
    batches = harness.hub.registry.telemetry_batches("digits", "1.0.0")
    assert len(batches) == 3 and len({b.batch_id for b in batches}) == 3
    assert sorted(b.requests for b in batches) == [1, 1, 1]
    assert [b.window_end for b in batches] == sorted(b.window_end for b in batches)


def test_full_disk_fails_the_download_clearly_and_the_old_model_keeps_serving(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import agent.transfer as transfer

    harness.publish("1.0.0")
    harness.publish("1.1.0")
    agent = harness.agent("disk")
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}

    def no_space(_path: Path, _offset: int, _data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transfer, "_write_chunk", no_space)
    assert set(harness.deploy("1.1.0", [agent]).values()) == {"failed"}
    assert "No space left on device" in harness.detail(agent) and "cannot write chunk" in harness.detail(agent)
    assert agent.service.predict(harness.trained.test_x[:1].tolist())["version"] == "1.0.0"
    monkeypatch.undo()  # space is back: the same version installs on the next order
    assert set(harness.deploy("1.1.0", [agent]).values()) == {"done"}


def test_a_full_disk_at_install_fails_with_enospc_and_the_next_order_succeeds_after_a_restart(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import agent.update.slots as slots

    harness.publish("1.0.0")
    harness.publish("1.1.0")
    agent = harness.agent("fullinstall")
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}

    def no_space(_source: Path, destination: Path) -> None:
        destination.write_bytes(b"the first blocks of the bundle")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(slots, "_copy", no_space)
    assert set(harness.deploy("1.1.0", [agent]).values()) == {"failed"}
    assert "ENOSPC (No space left on device)" in harness.detail(agent)
    saved = agent.store.load()
    assert saved.update is not None and saved.update.state == UpdateState.FAILED  # not stuck at install
    data = agent.config.data_dir
    assert not list((data / "slots").glob("*.tmp")) and not list((data / "downloads").iterdir())
    agent.service.predict(harness.trained.test_x[:1].tolist())  # serving and telemetry carry on
    assert agent.flush_telemetry() == 1
    monkeypatch.undo()  # space is back; the agent restarts
    harness.agents.remove(agent)
    agent.stop()
    restarted = harness.agent_from(agent.config)
    assert set(harness.deploy("1.1.0", [restarted]).values()) == {"done"}
    assert restarted.service.predict(harness.trained.test_x[:1].tolist())["version"] == "1.1.0"


def test_an_order_for_a_bundle_the_hub_lacks_fails_in_seconds_with_the_hubs_answer(harness: Harness) -> None:
    import time

    from fleet.wire.messages import DeploymentOrder, encode

    published = harness.publish("1.0.0")
    agent = harness.agent("nobundle", download_timeout_s=120)
    missing = "0f" * 32
    order = DeploymentOrder(
        deployment_id="lost-bundle",
        model="digits",
        version="1.0.0",
        target=agent.config.target,
        tuf_target=published.tuf_target,
        sha256=missing,
        size_bytes=100_000,
        chunk_size=harness.hub.settings.chunk_size,
        chunk_count=-(-100_000 // harness.hub.settings.chunk_size),
    )
    assert harness.hub.broker is not None
    started = time.monotonic()
    harness.hub.broker.publish(
        topics.device_topic(agent.config.device_id, "deployment"), encode(order), qos=1, retain=True
    )
    assert agent.wait_for_deployment("lost-bundle", 30) == UpdateState.FAILED
    assert time.monotonic() - started < 10  # the download timeout is 120 s
    assert f"the hub refused bundle {missing[:12]}: the hub has no bundle {missing}" in harness.detail(agent)
