"""The CLI's one way to a hub: its REST API, like kubectl talks to a cluster.

Where the hub is and which token to send come from, in this order: the ``--hub``/``--token`` options, the
``EDGEFLEET_HUB``/``EDGEFLEET_TOKEN`` environment variables, then ``~/.config/edgefleet/cli.toml``
(``$EDGEFLEET_CLI_CONFIG`` names another file)::

    hub = "https://hub.example:8600"
    token = "ef_..."
    ca_file = "/etc/edgefleet/hub-ca.crt"   # optional: the CA of the hub's HTTPS certificate

The token goes out as ``Authorization: Bearer``. Every failure is one line: `HubCallError` carries the HTTP
status and the hub's ``detail``, or why the hub could not be reached.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["DEFAULT_HUB", "Connection", "HubCallError", "HubClient", "config_path", "connection"]

DEFAULT_HUB = "http://127.0.0.1:8600"


class HubCallError(Exception):
    """A request the hub refused or could not answer; ``str()`` is the one line to show."""


@dataclass(frozen=True)
class Connection:
    """Where the hub is and how to authenticate."""

    url: str = DEFAULT_HUB
    token: str | None = None
    ca_file: str | None = None
    timeout_s: float = 30.0


def config_path() -> Path:
    """The CLI's config file: ``$EDGEFLEET_CLI_CONFIG`` or ``~/.config/edgefleet/cli.toml``."""
    named = os.environ.get("EDGEFLEET_CLI_CONFIG")
    if named:
        return Path(named)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "edgefleet" / "cli.toml"


def connection(hub: str | None = None, token: str | None = None) -> Connection:
    """The connection the options, the environment and the config file describe, in that order."""
    path = config_path()
    stored: dict[str, Any] = {}
    if path.is_file():
        try:
            stored = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise HubCallError(f"{path}: not valid TOML: {exc}") from None
    url = hub or os.environ.get("EDGEFLEET_HUB") or stored.get("hub") or DEFAULT_HUB
    secret = token or os.environ.get("EDGEFLEET_TOKEN") or stored.get("token")
    ca_file = stored.get("ca_file")
    return Connection(url=str(url).rstrip("/"), token=secret, ca_file=str(ca_file) if ca_file else None)


class HubClient:
    """JSON calls to the hub's REST API; raises `HubCallError` with one line for any failure."""

    def __init__(self, conn: Connection, *, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {conn.token}"} if conn.token else {}
        self.url = conn.url
        self._http = httpx.Client(
            base_url=conn.url,
            headers=headers,
            timeout=conn.timeout_s,
            verify=conn.ca_file or True,
            transport=transport,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        """GET ``path``; the decoded JSON answer."""
        return self._call("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: Any = None) -> Any:
        """POST ``body`` as JSON; the decoded answer (None when empty)."""
        return _json(self._call("POST", path, json=body))

    def put(self, path: str, body: Any) -> Any:
        """PUT ``body`` as JSON; the decoded answer."""
        return _json(self._call("PUT", path, json=body))

    def patch(self, path: str, body: Any) -> Any:
        """PATCH ``body`` as JSON; the decoded answer."""
        return _json(self._call("PATCH", path, json=body))

    def delete(self, path: str, **params: Any) -> Any:
        """DELETE ``path``; the decoded answer (None when empty)."""
        return _json(self._call("DELETE", path, params={k: v for k, v in params.items() if v is not None}))

    def get_bytes(self, path: str, **params: Any) -> bytes:
        """GET ``path``; the raw answer (a file)."""
        return self._call("GET", path, params={k: v for k, v in params.items() if v is not None}).content

    def post_bytes(self, path: str, body: Any) -> bytes:
        """POST ``body`` as JSON; the raw answer (an archive)."""
        return self._call("POST", path, json=body).content

    def upload(self, path: str, content: bytes, media_type: str) -> Any:
        """POST ``content`` as a file of ``media_type``; the decoded answer."""
        return _json(self._call("POST", path, content=content, headers={"Content-Type": media_type}))

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise HubCallError(f"cannot reach the hub at {self.url}: {exc or type(exc).__name__}") from None
        if response.is_success:
            return response
        raise HubCallError(f"HTTP {response.status_code}: {_detail(response)}")


def _json(response: httpx.Response) -> Any:
    return response.json() if response.content else None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0] if response.text.strip() else response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's own validation errors
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return " ".join(str(detail or body).split())
