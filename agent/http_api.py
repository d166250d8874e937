"""Local HTTP inference API on loopback (stdlib ``http.server`` only, to keep the agent small).

- ``POST /v1/predict``  ``{"inputs": [...]}`` (one input or a batch) -> answers naming the model version
- ``POST /v1/predict/stream``  newline-delimited JSON inputs -> one JSON answer line per input
- ``GET /v1/model`` the active model, ``GET /v1/health`` liveness

Every request gets an answer, and every refused one a 4xx with a JSON ``{"error": ...}`` and a closed connection:
malformed JSON or UTF-8, nesting too deep, a missing or bad ``Content-Length`` (chunked bodies are not
accepted), a body that stops before its length (408 after ``read_timeout_s``), a body over ``max_body_bytes``
(413), more rows than ``max_batch_rows`` (413), NaN or infinite numbers (422), an unknown path (404) or method
(405). Answers are strict JSON: nothing non-finite is ever written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn

from agent.errors import AgentError, BatchTooLargeError, InferenceError, NonFiniteError
from agent.inference import InferenceService

log = logging.getLogger(__name__)
_DIGITS = re.compile(r"[0-9]{1,19}")
_DISCARD_BYTES = 1024 * 1024
_JSON = "application/json"
_ROUTES = {"/v1/health": "GET", "/v1/model": "GET", "/v1/predict": "POST", "/v1/predict/stream": "POST"}


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """What one request may cost the device."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_batch_rows: int = 1024
    read_timeout_s: float = 10.0
    max_connections: int = 64


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once: beyond, a connection is answered 503 with
    ``Retry-After`` at once and closed, so a flood of clients cannot exhaust the device's threads and memory."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._active = 0
        self._active_lock = threading.Lock()

    @property
    def active_connections(self) -> int:
        """Connections being served now."""
        with self._active_lock:
            return self._active

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            body = json.dumps({"error": "too many connections to the local API; try again"}).encode()
            head = (
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            with contextlib.suppress(OSError):  # the client is gone; nothing to tell it
                request.sendall(head.encode() + body)
            self.shutdown_request(request)
            return
        with self._active_lock:
            self._active += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active -= 1
            self._slots.release()


class LocalApi:
    """Serves `InferenceService` on ``host:port`` (port 0 picks a free one) in a background thread."""

    def __init__(
        self, service: InferenceService, host: str = "127.0.0.1", port: int = 0, *, limits: ApiLimits | None = None
    ) -> None:
        limits = limits or ApiLimits()
        handler = _handler_for(service, limits)
        try:
            self._server = _BoundedServer((host, port), handler, limits.max_connections)
        except OSError as exc:
            raise AgentError(f"cannot serve the local API on {host}:{port}: {exc}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="agent-http", daemon=True)

    @property
    def active_connections(self) -> int:
        """Connections being served now (at most ``ApiLimits.max_connections``)."""
        return self._server.active_connections

    @property
    def url(self) -> str:
        """Base URL of the API."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Refused(Exception):
    """Answer ``status`` with ``message`` and close the connection."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _refuse_constant(name: str) -> NoReturn:
    raise NonFiniteError(f"{name} is not a finite number")


def _parse_json(data: bytes) -> Any:
    """Strict JSON: valid UTF-8 (or UTF-16/32), no NaN or Infinity, nesting within the parser's depth."""
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except NonFiniteError:
        raise
    except RecursionError:
        raise InferenceError("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers over Python's digit limit
        raise InferenceError(f"malformed JSON: {exc}") from None


def _status_of(error: InferenceError, service: InferenceService) -> HTTPStatus:
    if isinstance(error, BatchTooLargeError):
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    if isinstance(error, NonFiniteError):
        return HTTPStatus.UNPROCESSABLE_ENTITY
    if service.model is None:
        return HTTPStatus.SERVICE_UNAVAILABLE
    return HTTPStatus.BAD_REQUEST


def _handler_for(service: InferenceService, limits: ApiLimits) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        default_request_version = "HTTP/1.0"  # so even a garbled request line gets a status line back
        timeout = limits.read_timeout_s  # socket timeout: a stalled client gets 408, never a thread held forever
        _unread_body = False

        def log_message(self, format: str, *args: Any) -> None:
            return

        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):  # any other method, known or not
                return self._wrong_method
            raise AttributeError(name)

        def do_GET(self) -> None:
            self._serve(self._get)

        def do_POST(self) -> None:
            self._serve(self._post)

        def _wrong_method(self) -> None:
            self._serve(self._refuse_method)

        # -- routes -----------------------------------------------------------------------------------------

        def _get(self) -> tuple[HTTPStatus, dict[str, Any]]:
            self._route("GET")
            if self._body_announced():
                self._unread_body = True
                self.close_connection = True  # the body would otherwise be read as the next request
            if self.path == "/v1/health":
                return HTTPStatus.OK, {"status": "ok", "model_loaded": service.model is not None}
            model = service.model
            if model is None:
                return HTTPStatus.NOT_FOUND, {"error": "no model installed"}
            return HTTPStatus.OK, {
                "model": model.manifest.model,
                "version": model.version,
                "target": model.manifest.target,
                "sha256": model.sha256,
            }

        def _post(self) -> tuple[HTTPStatus, dict[str, Any]] | None:
            self._route("POST")
            body = self._read_body()
            if self.path == "/v1/predict/stream":
                self._stream(body)
                return None
            try:
                request = _parse_json(body)
            except InferenceError as exc:
                status = HTTPStatus.UNPROCESSABLE_ENTITY if isinstance(exc, NonFiniteError) else HTTPStatus.BAD_REQUEST
                raise _Refused(status, str(exc)) from None
            if not isinstance(request, dict) or "inputs" not in request:
                raise _Refused(HTTPStatus.BAD_REQUEST, 'body must be a JSON object with "inputs"')
            try:
                return HTTPStatus.OK, service.predict(request["inputs"], max_rows=limits.max_batch_rows)
            except InferenceError as exc:
                raise _Refused(_status_of(exc, service), str(exc)) from None

        def _refuse_method(self) -> NoReturn:
            self._unread_body = self._body_announced()
            allowed = _ROUTES.get(self.path)
            if allowed is None:
                raise _Refused(HTTPStatus.NOT_FOUND, f"no route {self.path}")
            raise _Refused(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.path} takes {allowed}, not {self.command}")

        def _route(self, method: str) -> None:
            if _ROUTES.get(self.path) != method:
                self._refuse_method()

        def _stream(self, body: bytes) -> None:
            lines: list[dict[str, Any]] = []
            rows_left = limits.max_batch_rows
            for number, line in enumerate(body.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    answer = service.predict(_parse_json(line), max_rows=rows_left)
                    rows_left -= len(answer["predictions"])
                    lines.append(answer)
                except BatchTooLargeError:
                    cap = limits.max_batch_rows
                    lines.append({"error": f"line {number}: over this device's cap of {cap} rows per request"})
                except InferenceError as exc:
                    lines.append({"error": f"line {number}: {exc}"})
            data = b"".join(json.dumps(item, allow_nan=False).encode() + b"\n" for item in lines)
            self._write(HTTPStatus.OK, data, "application/x-ndjson")

        # -- reading and answering ----------------------------------------------------------------------------

        def _body_announced(self) -> bool:
            return "Transfer-Encoding" in self.headers or self.headers.get("Content-Length", "0").strip() != "0"

        def _read_body(self) -> bytes:
            self._unread_body = self._body_announced()
            if "Transfer-Encoding" in self.headers:
                raise _Refused(HTTPStatus.LENGTH_REQUIRED, "send the body with Content-Length; chunked is not accepted")
            values = self.headers.get_all("Content-Length") or []
            if not values:
                raise _Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            if len(values) > 1 or not _DIGITS.fullmatch(values[0].strip()):
                raise _Refused(HTTPStatus.BAD_REQUEST, "Content-Length must be one non-negative integer")
            length = int(values[0])
            if length > limits.max_body_bytes:
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {limits.max_body_bytes} bytes")
            try:
                data = self.rfile.read(length)
            except TimeoutError:
                self._unread_body = False  # the client stopped sending
                raise _Refused(
                    HTTPStatus.REQUEST_TIMEOUT,
                    f"body shorter than its Content-Length of {length} after {limits.read_timeout_s} s",
                ) from None
            self._unread_body = False
            if len(data) < length:
                raise _Refused(HTTPStatus.BAD_REQUEST, f"connection closed after {len(data)} of {length} body bytes")
            return data

        def _serve(self, route: Any) -> None:
            try:
                result = route()
            except _Refused as refusal:
                self.close_connection = True
                result = refusal.status, {"error": str(refusal)}
            except Exception:  # a bug must still answer, never drop the connection
                log.exception("local API: %s %s failed", self.command, self.path)
                self.close_connection = True
                result = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see the agent log"}
            if result is not None:
                self._write(result[0], json.dumps(result[1], allow_nan=False).encode(), _JSON)

        def _write(self, status: HTTPStatus, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """The stdlib's refusals (bad request line or headers, URI too long) as JSON, connection closed."""
            self.close_connection = True
            self._write(HTTPStatus(code), json.dumps({"error": message or HTTPStatus(code).phrase}).encode(), _JSON)

        def finish(self) -> None:
            super().finish()
            if self._unread_body:
                self._discard_unread()

        def _discard_unread(self) -> None:
            """Read what the client still sends before closing, so the close is no reset that eats the answer."""
            try:
                self.connection.shutdown(socket.SHUT_WR)
                received = 0
                while received < _DISCARD_BYTES:
                    chunk = self.connection.recv(65536)
                    if not chunk:
                        return
                    received += len(chunk)
            except OSError:  # includes the timeout: the answer was sent, closing is all that is left
                return

    return Handler
