"""Hub replicas on one PostgreSQL schema sharing device traffic, on a Mosquitto of the test's own (no retained
states of other tests; MQTT shared subscriptions) and on a 3-node NATS cluster (NATS queue groups): three
processes, whose leader is SIGKILLed mid-rollout, another replica taking over and every device installing the
version exactly once; and two in-process replicas, of which only the leader broadcasts bundle chunks."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.daemon import Agent
from fleet.rollout import RolloutState
from fleet.rollout_plan import plan_from_cli
from fleet.wire import topics
from fleet.wire.messages import DeploymentOrder, FetchRequest, UpdateEvent, UpdateState, decode, decode_chunk, encode
from fleet.wire.mqtt import BrokerAddress, PahoBroker
from fleet.wire.transport import Message
from hub.app import Hub
from hub.cluster.local_replicas import LocalReplicas
from hub.config import HubSettings
from hub.demo.model import TrainedDigits
from hub.registry import LeaderRow
from hub.registry.rollouts import RolloutStore
from hub.rollouts.operations import create_rollout, request_command
from tests.integration.fleet_harness import TARGET, manifest_for
from tests.integration.nats_cluster import NATS_SERVER, NatsCluster
from tests.integration.private_mosquitto import PrivateMosquitto
from tests.pg_schema import fresh_schema
from tests.waiting import wait_until

DEVICES = 4
TIMEOUT_S = 90.0


class Wire:
    """A test client on Mosquitto counting the deployment orders and 'done' events each device got."""

    def __init__(self, prefix: str, port: int) -> None:
        self.prefix = prefix
        self.orders: Counter[tuple[str, str]] = Counter()
        self.done: Counter[tuple[str, str]] = Counter()
        self.broker = PahoBroker(BrokerAddress("127.0.0.1", port), client_id=f"test-wire-{uuid.uuid4().hex[:6]}")
        self.broker.subscribe(topics.device_wildcard("deployment"), self._order)
        self.broker.subscribe(topics.device_wildcard("events"), self._event)

    def _order(self, message: Message) -> None:
        device_id, _ = topics.parse_device_topic(message.topic)
        if device_id.startswith(self.prefix) and message.payload:
            order = decode(DeploymentOrder, message.payload, topic=message.topic)
            self.orders[(device_id, order.deployment_id)] += 1

    def _event(self, message: Message) -> None:
        device_id, _ = topics.parse_device_topic(message.topic)
        if device_id.startswith(self.prefix):
            event = decode(UpdateEvent, message.payload, topic=message.topic)
            if event.state == UpdateState.DONE:
                self.done[(device_id, event.deployment_id)] += 1


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@dataclass(frozen=True)
class SharedBroker:
    """Where replicas, devices and the test's wire connect, and how replicas share traffic."""

    hub_url: str  # the replicas' MQTT connection
    device_url: str  # the devices' (another node of a cluster)
    wire_port: int
    share_nats_url: str | None  # NATS queue groups instead of $share subscriptions


@pytest.fixture(params=["mosquitto", "nats"])
def shared_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedBroker]:
    """Mosquitto with MQTT shared subscriptions, or a 3-node NATS cluster with queue groups, hub and devices
    on different nodes."""
    if request.param == "mosquitto":
        mosquitto = request.getfixturevalue("mosquitto")
        yield SharedBroker(mosquitto.url, mosquitto.url, mosquitto.port, None)
        return
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip("nats-server is not installed (.ci/run installs the Debian package nats-server)")
    cluster = NatsCluster(tmp_path)
    try:
        cluster.start()
        nats_urls = ",".join(cluster.nats_url(node) for node in (0, 2))
        yield SharedBroker(cluster.url(0), cluster.url(1), cluster.mqtt_ports[2], nats_urls)
    finally:
        cluster.stop()


def test_the_leader_dies_mid_rollout_and_every_device_updates_once(
    tmp_path: Path, postgres_url: str, shared_broker: SharedBroker, trained: TrainedDigits
) -> None:
    settings = HubSettings(
        data_dir=tmp_path / "hub",  # shared by the replicas: TUF repository (file-locked) and artifacts
        database_url=postgres_url,
        broker_url=shared_broker.hub_url,
        share_nats_url=shared_broker.share_nats_url,
        replica=True,
        leader_check_s=0.2,
        chunk_size=4096,
        rebroadcast_window_s=0.5,
    )
    publisher = Hub(settings)  # not started: publishes and provisions through the shared database and files
    publisher.publish(manifest_for(trained, "1.0.0"), trained.onnx_path, trained.golden_x, trained.golden_logits)
    prefix = f"rep-{uuid.uuid4().hex[:6]}"
    wire = Wire(prefix, shared_broker.wire_port)
    replicas = LocalReplicas(tmp_path)
    agents: list[Agent] = []
    try:
        replicas.start([settings] * 3)
        for index in range(DEVICES):
            device_id = f"{prefix}-d{index}"
            _, secret = publisher.registry.provision_device(device_id, TARGET)
            directory = tmp_path / device_id
            directory.mkdir()
            (directory / "root.json").write_bytes(publisher.tuf.trusted_root())
            config = {
                "device_id": device_id,
                "target": TARGET,
                "broker_url": shared_broker.device_url,
                "password": secret,
                "data_dir": directory / "data",
                "trust_root": directory / "root.json",
                "telemetry_interval_s": 3600,
                "chunk_timeout_s": 1.0,
                "download_timeout_s": 60,
            }
            agents.append(Agent(AgentConfig.model_validate(config)))
            agents[-1].start()
        store = RolloutStore(publisher.registry.db)
        plan = plan_from_cli(
            "digits:1.0.0", canary="2", waves="100", gate=False, min_devices=1, approval="after_canary"
        )
        rollout_id = create_rollout(store, publisher.registry, plan).rollout_id  # as a follower's REST route does

        def state() -> RolloutState:
            return store.load(rollout_id).state

        assert wait_until(lambda: state() == RolloutState.AWAITING_APPROVAL, TIMEOUT_S), (state(), replicas.tail())
        with publisher.registry.db.session() as session:
            leader = session.get(LeaderRow, "rollouts")
        assert leader is not None and leader.epoch == 1
        first_wave = {device for device, _ in wire.done}
        assert len(first_wave) == 2
        killed = replicas.by_pid(int(leader.holder.rsplit(":", 1)[1]))
        killed.kill()  # SIGKILL mid-rollout: no clean shutdown, its database session and broker link just end
        killed.wait(10)

        request_command(store, rollout_id, "promote")  # queued in the database; whoever leads applies it
        assert wait_until(lambda: state() == RolloutState.COMPLETED, TIMEOUT_S), (state(), replicas.tail())
        assert wait_until(lambda: len(wire.done) == DEVICES, TIMEOUT_S)

        with publisher.registry.db.session() as session:
            new_leader = session.get(LeaderRow, "rollouts")
        assert new_leader is not None and new_leader.epoch >= 2 and new_leader.holder != leader.holder
        device_ids = {a.config.device_id for a in agents}
        assert wire.done == Counter({(d, rollout_id): 1 for d in device_ids})  # every device installed once
        assert wire.orders == Counter({(d, rollout_id): 1 for d in device_ids})  # no order dispatched twice
        for agent in agents:
            assert agent.service.predict([[0.0] * 64])["version"] == "1.0.0"

        def rows() -> set[tuple[str, str]]:
            return {(r.device_id, r.state) for r in publisher.registry.deployment_devices(rollout_id)}

        # written in batches by the replicas and by the leader (from retained states): the rows catch up
        assert wait_until(lambda: rows() == {(d, "done") for d in device_ids}, 10), rows()
    finally:
        for agent in agents:
            agent.stop()
        replicas.stop()
        wire.broker.close()
        publisher.db.close()


def test_only_the_leader_broadcasts_chunks_and_every_replica_answers_metadata(
    tmp_path: Path, postgres_url: str, mosquitto: PrivateMosquitto
) -> None:
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        database_url=postgres_url,
        broker_url=mosquitto.url,
        replica=True,
        chunk_size=4096,
        chunk_gather_s=0.05,
        rebroadcast_window_s=600,
    )
    leader, follower = Hub(settings), Hub(settings)
    wire = PahoBroker(BrokerAddress("127.0.0.1", mosquitto.port), client_id=f"test-wire-{uuid.uuid4().hex[:6]}")
    try:
        leader.start()  # takes the lead: the follower's campaign finds the lock held
        follower.start()
        assert leader.leadership.is_leader and not follower.leadership.is_leader
        sha = leader.store.put_bytes(os.urandom(3 * 4096))
        devices = [f"rep-{uuid.uuid4().hex[:6]}-{i}" for i in range(8)]
        for device in devices:
            leader.registry.provision_device(device, TARGET)
        frames: Counter[int] = Counter()
        wire.subscribe(topics.bundle_topic(sha), lambda m: frames.update([decode_chunk(m.payload).index]))
        for device in devices:  # a shared subscription hands each request to one replica
            request = FetchRequest(request_id=device, kind="chunks", sha256=sha, chunks=[0, 1, 2])
            wire.publish(topics.device_topic(device, "fetch"), encode(request))
        for device in devices:  # sent after the chunk requests: once both replicas answered, both saw theirs
            request = FetchRequest(request_id=device, kind="metadata", name="1.root.json")
            wire.publish(topics.device_topic(device, "fetch"), encode(request))
        assert leader.transfer is not None and follower.transfer is not None
        assert wait_until(lambda: leader.transfer.egress_bytes > 0 and follower.transfer.egress_bytes > 0, TIMEOUT_S)
        assert wait_until(lambda: len(frames) == 3, TIMEOUT_S)
        # one broadcast per chunk, whatever the number of replicas (requests after it wait for the repair window)
        assert follower.transfer.broadcasts == 0 and leader.transfer.broadcasts == 3
        assert frames == Counter({0: 1, 1: 1, 2: 1})
    finally:
        wire.close()
        follower.stop()
        leader.stop()
