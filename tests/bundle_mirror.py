"""A bundle mirror for tests, as a CDN would be: an ASGI app (run it with `tests.http_server.running_server`)
serving files by name with single byte ranges. It can cut the connection mid-body, serve tampered bytes, answer
an error status, or require HTTP Basic credentials (then it stands in for the hub), and it records requests."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")

Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


def store_files(root: Path) -> Callable[[str], bytes | None]:
    """Files of an artifact store folder (``root/sha256/ab/abcd...``) by digest, as a CDN in front of it serves."""

    def read(name: str) -> bytes | None:
        path = root / "sha256" / name[:2] / name
        return path.read_bytes() if re.fullmatch(r"[0-9a-f]{64}", name) and path.is_file() else None

    return read


@dataclass
class Request:
    """What the mirror was asked."""

    name: str
    range: str | None
    authorization: str | None


@dataclass
class BundleMirror:
    """Serves ``files(name)`` at ``/{prefix}/{name}``; see the module docstring for the faults it can play."""

    files: Callable[[str], bytes | None]
    cut_after: int | None = None  # the first answer stops after this many body bytes
    tamper: bool = False  # every answer's first byte is flipped
    status: int | None = None  # answer every request with this status and no body
    credentials: str | None = None  # "Basic ..." the request must carry (401 otherwise)
    requests: list[Request] = field(default_factory=list)
    bytes_sent: int = 0

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        name = scope["path"].rsplit("/", 1)[-1]
        self.requests.append(Request(name, headers.get("range"), headers.get("authorization")))
        if self.status is not None:
            await _answer(send, self.status, b"")
            return
        if self.credentials is not None and headers.get("authorization") != self.credentials:
            await _answer(send, 401, b"")
            return
        data = self.files(name)
        if data is None:
            await _answer(send, 404, b"")
            return
        start, end, status = 0, len(data), 200
        extra: list[tuple[bytes, bytes]] = []
        wanted = _RANGE.match(headers.get("range", ""))
        if wanted:
            start = int(wanted.group(1))
            end = min(len(data), int(wanted.group(2)) + 1) if wanted.group(2) else len(data)
            if start >= len(data):
                await _answer(send, 416, b"", [(b"content-range", f"bytes */{len(data)}".encode())])
                return
            status = 206
            extra = [(b"content-range", f"bytes {start}-{end - 1}/{len(data)}".encode())]
        body = data[start:end]
        if self.tamper and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if self.cut_after is not None:
            cut, self.cut_after = self.cut_after, None
            await send({"type": "http.response.start", "status": status, "headers": _headers(len(body), extra)})
            await send({"type": "http.response.body", "body": body[:cut], "more_body": True})
            self.bytes_sent += len(body[:cut])
            return  # unfinished: the server closes the connection mid-body
        self.bytes_sent += len(body)
        await _answer(send, status, body, extra)


def _headers(length: int, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", str(length).encode()), (b"accept-ranges", b"bytes"), *extra]


async def _answer(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _headers(len(body), extra or [])})
    await send({"type": "http.response.body", "body": body})
