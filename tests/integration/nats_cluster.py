"""A 3-node NATS server cluster with JetStream and MQTT on free ports, each node a process a test may kill."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt

from fleet.wire.mqtt import BrokerAddress, BrokerConnectionError, PahoBroker
from tests.waiting import wait_until

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NatsCluster:
    """Nodes ``n0..n2``: routes between all, JetStream (MQTT's retained messages, sessions and QoS 1 live in its
    streams, replicated on every node so a node's loss loses none), MQTT 3.1.1 on ``mqtt_ports``."""

    def __init__(
        self,
        workdir: Path,
        size: int = 3,
        *,
        stream_replicas: int | None = None,
        consumer_replicas: int | None = None,
        server: str = "",
        mqtt: str = "",
    ) -> None:
        """Replicas of MQTT's streams and consumers default to ``size``; ``server`` and ``mqtt`` are extra lines
        for the top level and the ``mqtt`` block of every node's configuration (limits a benchmark raises)."""
        ports = _free_ports(4 * size)
        self.client_ports, self.route_ports = ports[:size], ports[size : 2 * size]
        self.mqtt_ports, self.monitor_ports = ports[2 * size : 3 * size], ports[3 * size :]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.route_ports)
        self.configs: list[Path] = []
        self.logs: list[Path] = []
        for index in range(size):
            config = workdir / f"nats-n{index}.conf"
            # a single node runs without a cluster block: its JetStream would wait for peers that never come
            cluster = (
                f"cluster {{ name: edgefleet, listen: 127.0.0.1:{self.route_ports[index]}, routes: [{routes}] }}\n"
            )
            config.write_text(
                f"server_name: n{index}\n"
                f"listen: 127.0.0.1:{self.client_ports[index]}\n"
                f"http: 127.0.0.1:{self.monitor_ports[index]}\n"
                f'jetstream {{ store_dir: "{workdir / f"js-n{index}"}" }}\n'
                + (cluster if size > 1 else "")
                + f"mqtt {{ listen: 127.0.0.1:{self.mqtt_ports[index]}, "
                f"stream_replicas: {stream_replicas or size}, "
                f"consumer_replicas: {consumer_replicas or size} {mqtt}}}\n{server}\n"
            )
            self.configs.append(config)
            self.logs.append(workdir / f"nats-n{index}.log")
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * size

    def url(self, node: int) -> str:
        """mqtt:// URL of a node's MQTT listener."""
        return f"mqtt://127.0.0.1:{self.mqtt_ports[node]}"

    def nats_url(self, node: int) -> str:
        """nats:// URL of a node's NATS client listener."""
        return f"nats://127.0.0.1:{self.client_ports[node]}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every node and wait until each accepts an MQTT session (JetStream has a leader)."""
        for index, config in enumerate(self.configs):
            with self.logs[index].open("ab") as log:
                self.processes[index] = subprocess.Popen([NATS_SERVER, "-c", str(config)], stdout=log, stderr=log)
        for index in range(len(self.configs)):
            if not wait_until(lambda i=index: self._mqtt_ready(i), timeout_s):  # type: ignore[misc]
                raise RuntimeError(f"NATS node n{index} did not accept MQTT: {self.logs[index].read_text()[-2000:]}")

    def healthy(self, node: int) -> bool:
        """Whether the node's JetStream is current: its meta leader and every stream and consumer it holds a
        replica of have a leader it is in step with (``/healthz``), as after a lost peer's re-elections."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_ports[node]}/healthz", timeout=2) as reply:
                return bool(reply.status == 200 and json.loads(reply.read()).get("status") == "ok")
        except (OSError, ValueError):
            return False

    def grants_qos1(self, node: int, timeout_s: float = 8.0) -> bool:
        """Whether a fresh session on the node gets a QoS 1 subscription granted (NATS creates a JetStream
        consumer for it; right after a peer's loss that times out and the SUBACK says failure)."""
        granted = threading.Event()
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"qos1probe{node}")
        client.on_connect = lambda c, *_: c.subscribe("edgefleet/v1/probe", qos=1)
        client.on_subscribe = lambda _c, _u, _mid, codes, _p: granted.set() if not codes[0].is_failure else None
        try:
            client.connect("127.0.0.1", self.mqtt_ports[node])
        except OSError:
            return False
        client.loop_start()
        try:
            return granted.wait(timeout_s)
        finally:
            client.disconnect()
            client.loop_stop()

    def kill(self, node: int) -> None:
        """SIGKILL one node: its clients lose their connection with no goodbye."""
        process = self.processes[node]
        if process is not None:
            process.kill()
            process.wait()
            self.processes[node] = None

    def stop(self) -> None:
        """Kill every node still running."""
        for index in range(len(self.processes)):
            self.kill(index)

    def _mqtt_ready(self, node: int) -> bool:
        try:
            probe = PahoBroker(
                BrokerAddress("127.0.0.1", self.mqtt_ports[node]), client_id=f"probe{node}", connect_timeout_s=2.0
            )
        except BrokerConnectionError:
            return False
        probe.close()
        return True
