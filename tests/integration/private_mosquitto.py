"""A Mosquitto process of the test's own, on a free port, that a test may stop and start again."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.waiting import port_accepts, wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class PrivateMosquitto:
    """Mosquitto on 127.0.0.1:port (anonymous, or the listener ``listener(port)`` renders); `stop` kills it like
    a crash, `start` brings it back.

    With ``persistent``, the broker keeps retained messages and sessions in ``workdir`` as production would:
    written on a clean stop (``stop(graceful=True)``) and every ``autosave_interval_s``, read back at start.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        listener: Callable[[int], str] | None = None,
        persistent: bool = False,
        autosave_interval_s: int = 1800,
    ) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.config = workdir / "mosquitto.conf"
        body = listener(self.port) if listener else f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        # run as whoever runs the tests (as root, mosquitto would otherwise switch to its own user first)
        persistence = (
            f"persistence true\npersistence_location {workdir}/\nautosave_interval {autosave_interval_s}\n"
            if persistent
            else "persistence false\n"
        )
        self.config.write_text(f"{body}\nuser {getpass.getuser()}\n{persistence}max_inflight_messages 100\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """mqtt:// URL of the listener."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start and wait until the port accepts connections."""
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_until(lambda: port_accepts(self.port), timeout_s):  # another process binds the port
            raise RuntimeError("private mosquitto did not start")

    def stop(self, *, graceful: bool = False) -> None:
        """Kill the broker (SIGKILL: no clean goodbye to clients), or with ``graceful`` stop it as a service
        manager would (SIGTERM: it saves its persistence file first)."""
        if self.process is not None:
            if graceful:
                self.process.terminate()
            else:
                self.process.kill()
            self.process.wait()
            self.process = None
