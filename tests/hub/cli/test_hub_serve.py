"""``edgefleet hub serve``: settings from flags, environment and file; one-line errors; JSON logs; as a real
process, the first start prints an admin token once, which opens the REST API, and the next start prints none."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from hub.cli import app
from tests.waiting import port_accepts, wait_until

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`hub serve` in this process points the root logger at CliRunner's stderr, closed after the run: put the
    logging configuration back, so later tests' log records are not written to a closed stream."""
    root, hub_log = logging.getLogger(), logging.getLogger("hub")
    handlers, level, hub_level = root.handlers[:], root.level, hub_log.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    hub_log.setLevel(hub_level)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["hub", "serve", "--data-dir", str(tmp_path / "hub"), *args], env=env or {}, catch_exceptions=False
    )
    return result.exit_code, result.output


def _one_line_error(code: int, output: str) -> str:
    assert code == 1, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    return lines[0]


def test_a_taken_api_port_is_one_line(tmp_path: Path, taken_port: int) -> None:
    line = _one_line_error(*_serve(tmp_path, "--api-port", str(taken_port), "--broker-port", "0"))
    assert line == f"error: the REST API cannot listen on 127.0.0.1:{taken_port}: Address already in use"


def test_with_json_a_taken_api_port_is_one_json_object(tmp_path: Path, taken_port: int) -> None:
    code, output = _serve(tmp_path, "--api-port", str(taken_port), "--broker-port", "0", "--json")
    assert code == 1 and output.count("\n") == 1
    assert json.loads(output) == {
        "error": f"the REST API cannot listen on 127.0.0.1:{taken_port}: Address already in use"
    }


def test_a_taken_broker_port_is_one_line(tmp_path: Path, taken_port: int) -> None:
    line = _one_line_error(*_serve(tmp_path, "--broker-port", str(taken_port), "--api-port", str(_free_port())))
    assert f"embedded broker failed to start on 127.0.0.1:{taken_port}" in line and "already in use" in line


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
    line = _one_line_error(*_serve(tmp_path, "--api-port", "0", "--broker-port", "0", "--database-url", url))
    assert line.startswith("error: cannot open database postgresql+psycopg://") and "refused" in line


def test_an_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    line = _one_line_error(*_serve(tmp_path, "--api-port", "0", "--broker-url", f"mqtt://127.0.0.1:{_free_port()}"))
    assert line.startswith("error: cannot connect to broker at 127.0.0.1:") and "refused" in line


def test_a_bad_setting_from_the_environment_is_one_line(tmp_path: Path) -> None:
    line = _one_line_error(*_serve(tmp_path, env={"EDGEFLEET_API_PORT": "99999"}))
    assert line == "error: invalid settings: api_port: Input should be less than or equal to 65535"


def test_a_hub_from_file_and_environment_serves_and_logs_json(tmp_path: Path) -> None:
    api_port = _free_port()
    config = tmp_path / "hub.toml"
    auth = tmp_path / "mosquitto"
    config.write_text(f'data_dir = "{tmp_path / "hub"}"\napi_port = 1\nbroker_port = 0\nbroker_auth_dir = "{auth}"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEFLEET_API_PORT": str(api_port)}  # the variable beats the file
    command = [sys.executable, "-c", "from hub.cli import main; main()", "hub", "serve", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--api-host", "127.0.0.1", "--log-format", "json"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_until(lambda: port_accepts(api_port) or process.poll() is not None, 60)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert httpx.get(f"http://127.0.0.1:{api_port}/health").json()["status"] == "ok"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    started = [r for r in records if r["message"].startswith("hub: broker")]
    assert started and started[0]["level"] == "INFO" and started[0]["logger"] == "hub"
    assert f"127.0.0.1:{api_port}" in started[0]["message"]
    assert (tmp_path / "hub" / "registry.db").exists()  # the file's data_dir was used
    assert "edgefleet-hub:" in (auth / "passwd").read_text()  # Mosquitto's files written at start


SERVE = "from hub.cli import main; main()"


@contextmanager
def _running(data_dir: Path, api_port: int) -> Iterator[list[str]]:
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
    with _running(tmp_path / "hub", port) as printed:
        tokens = re.findall(r"(ef_[A-Za-z0-9_-]{40,})", "".join(printed))
        assert len(tokens) == 1, printed
        url = f"http://127.0.0.1:{port}/models"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": f"Bearer {tokens[0]}"}).json() == []
    with _running(tmp_path / "hub", port) as printed:
        assert not any("token" in line for line in printed), printed
