"""The CLI's REST client: where the hub and token come from, the bearer header, one-line errors."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hub.cli.client import DEFAULT_HUB, HubCallError, HubClient, connection


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cli.toml"
    monkeypatch.setenv("EDGEFLEET_CLI_CONFIG", str(path))
    monkeypatch.delenv("EDGEFLEET_HUB", raising=False)
    monkeypatch.delenv("EDGEFLEET_TOKEN", raising=False)
    return path


def test_options_beat_the_environment_which_beats_the_config_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert connection() == connection().__class__(url=DEFAULT_HUB, token=None)
    config_file.write_text('hub = "http://from-file:1/"\ntoken = "file-token"\nca_file = "/ca.crt"\n')
    from_file = connection()
    assert (from_file.url, from_file.token, from_file.ca_file) == ("http://from-file:1", "file-token", "/ca.crt")
    monkeypatch.setenv("EDGEFLEET_HUB", "http://from-env:2")
    monkeypatch.setenv("EDGEFLEET_TOKEN", "env-token")
    assert (connection().url, connection().token) == ("http://from-env:2", "env-token")
    assert (connection("http://flag:3", "flag-token").url, connection(token="flag-token").token) == (
        "http://flag:3",
        "flag-token",
    )


def test_a_broken_config_file_is_one_line(config_file: Path) -> None:
    config_file.write_text("hub = \n")
    with pytest.raises(HubCallError, match="not valid TOML"):
        connection()


def test_the_token_is_sent_as_bearer_and_errors_carry_status_and_detail() -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.url.path == "/devices":
            return httpx.Response(200, json=[{"id": "d0"}])
        if request.url.path == "/validation":
            return httpx.Response(422, json={"detail": [{"msg": "field required"}, {"msg": "too long"}]})
        if request.url.path == "/plain":
            return httpx.Response(502, text="bad gateway\nfrom the proxy")
        return httpx.Response(404, json={"error": "NotFoundError", "detail": "device d9 is not\nprovisioned"})

    conn = connection("http://hub.test", "ef_secret")
    client = HubClient(conn, transport=httpx.MockTransport(answer))
    assert client.get("/devices") == [{"id": "d0"}] and seen == ["Bearer ef_secret"]
    with pytest.raises(HubCallError) as missing:
        client.get("/devices/d9")
    assert str(missing.value) == "HTTP 404: device d9 is not provisioned"
    with pytest.raises(HubCallError, match=r"^HTTP 422: field required; too long$"):
        client.post("/validation", {})
    with pytest.raises(HubCallError, match=r"^HTTP 502: bad gateway$"):
        client.delete("/plain")


def test_an_unreachable_hub_is_one_line() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        client = HubClient(connection(f"http://127.0.0.1:{port}"))
        with pytest.raises(HubCallError, match=rf"^cannot reach the hub at http://127.0.0.1:{port}: "):
            client.get("/health")
