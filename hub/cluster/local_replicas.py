"""`LocalReplicas`: hub replicas as processes on this host, for trying a replica set, its tests and benchmarks.

Each replica is ``python -m hub.cluster.local_replicas SETTINGS_JSON``: it starts a `Hub` from the settings,
prints ``started`` once serving, and runs until SIGTERM (a clean stop) or SIGKILL (a crash a test provokes).
Its log lines (INFO) go to ``replica-N.log`` in the folder given.

    replicas = LocalReplicas(Path("logs"))
    replicas.start([settings_a, settings_b, settings_c], timeout_s=120)
    ...
    replicas.stop()
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from hub.config import HubSettings
from hub.errors import HubError

__all__ = ["LocalReplicas", "ReplicaError"]


class ReplicaError(HubError):
    """A replica did not start in time, or exited."""


class LocalReplicas:
    """Hub replica processes, one per settings given; each one's output goes to ``logs/replica-N.log``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, settings: Sequence[HubSettings], timeout_s: float = 120.0) -> None:
        """Start a replica per settings and wait until each says it has started."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        first = len(self.processes)
        for index, hub_settings in enumerate(settings, start=first):
            with self._log(index).open("w") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", __name__, hub_settings.model_dump_json()],
                        stdout=subprocess.PIPE,
                        stderr=log,
                        text=True,
                        env=env,
                    )
                )
        deadline = time.monotonic() + timeout_s
        for index, process in enumerate(self.processes[first:], start=first):
            if _readline(process, deadline - time.monotonic()).strip() != "started":
                raise ReplicaError(f"hub replica {index} did not start in {timeout_s:g} s: {self.tail(index)}")

    def by_pid(self, pid: int) -> subprocess.Popen[str]:
        """The replica process with this pid (a leader's lease names its holder's pid)."""
        return next(p for p in self.processes if p.pid == pid)

    def tail(self, index: int | None = None) -> str:
        """The last log line of replica ``index``, or the last lines of every replica's log."""
        if index is not None:
            lines = self._log(index).read_text().strip().splitlines()
            return lines[-1] if lines else "no output"
        return "\n".join(self._log(i).read_text()[-3000:] for i in range(len(self.processes)))

    def check_alive(self) -> None:
        """Raise `ReplicaError` naming the first replica that has exited."""
        for index, process in enumerate(self.processes):
            if process.poll() is not None:
                raise ReplicaError(f"hub replica {index} exited ({process.returncode}): {self.tail(index)}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every live replica and wait for it; kill one that does not stop in ``timeout_s``."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()

    def _log(self, index: int) -> Path:
        return self.logs / f"replica-{index}.log"


def _readline(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(max(0.0, timeout_s)):
            return ""
    return process.stdout.readline()


def _serve(settings_json: str) -> None:
    """Run one replica until SIGTERM."""
    from hub.app import Hub

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    hub = Hub(HubSettings.model_validate_json(settings_json))
    hub.start()
    print("started", flush=True)
    stop.wait()
    hub.stop()


if __name__ == "__main__":
    _serve(sys.argv[1])
