"""The one polling helper of the test suite, for conditions no event or callback announces (another process
binding a port, a broker noticing a dead link). Prefer waiting on an event where the code offers one."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

POLL_S = 0.02


def wait_until(condition: Callable[[], object], timeout_s: float = 30.0, *, interval_s: float = POLL_S) -> bool:
    """Poll ``condition`` until it is truthy or ``timeout_s`` passes; return whether it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` now."""
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0
