"""``edgefleet hub serve`` as a real process: the first start prints an admin token once, which opens the REST API;
the next start prints none."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.waiting import port_accepts, wait_until

SERVE = "from hub.cli import main; main()"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serve(data_dir: Path, api_port: int) -> Iterator[list[str]]:
    """Run the hub until its API accepts connections; yield what it printed up to its ready line."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    env.pop("EDGEFLEET_ADMIN_TOKEN", None)
    args = ["hub", "serve", "--data-dir", str(data_dir), "--broker-port", "0", "--api-port", str(api_port)]
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    try:
        assert process.stderr is not None
        printed: list[str] = []
        for line in process.stderr:  # blocks on the pipe: the hub prints its ready line after starting
            printed.append(line)
            if line.startswith("hub: broker"):
                break
        assert printed and printed[-1].startswith("hub: broker"), "".join(printed)
        assert wait_until(lambda: port_accepts(api_port), 30)
        yield printed
    finally:
        process.terminate()
        process.wait(30)


def test_first_start_prints_an_admin_token_once(tmp_path: Path) -> None:
    port = _free_port()
    with _serve(tmp_path / "hub", port) as printed:
        tokens = re.findall(r"(ef_[A-Za-z0-9_-]{40,})", "".join(printed))
        assert len(tokens) == 1, printed
        url = f"http://127.0.0.1:{port}/models"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": f"Bearer {tokens[0]}"}).json() == []
    with _serve(tmp_path / "hub", port) as printed:
        assert not any("token" in line for line in printed), printed
