"""Run an ASGI app with uvicorn in a thread, for tests that need a real HTTP(S) server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.waiting import wait_until


@contextmanager
def running_server(app: object, *, port: int = 0, **config: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on ``port`` (0: an ephemeral one) in a thread (``config``: more `uvicorn.Config`
    settings, such as ``ssl_certfile``); yields ``host:port``. Start-up is polled: uvicorn announces it by a flag
    only."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **config))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10)  # start-up includes model loading
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def free_port() -> int:
    """A TCP port nothing listens on now, for a server whose address must be known before it starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
