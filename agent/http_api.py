"""Local HTTP inference API on loopback (stdlib only, to keep the agent small).

- ``POST /v1/predict``  ``{"inputs": [...]}`` (one input or a batch) -> answers naming the model version
- ``POST /v1/predict/stream``  newline-delimited JSON inputs -> one JSON answer line per input
- ``GET /v1/model`` the active model, ``GET /v1/health`` liveness
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.errors import InferenceError
from agent.inference import InferenceService

MAX_BODY_BYTES = 16 * 1024 * 1024


class LocalApi:
    """Serves `InferenceService` on ``host:port`` (port 0 picks a free one) in a background thread."""

    def __init__(self, service: InferenceService, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = _handler_for(service)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="agent-http", daemon=True)

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


def _handler_for(service: InferenceService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _read_body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY_BYTES} bytes"})
                return None
            return self.rfile.read(length)

        def do_GET(self) -> None:
            if self.path == "/v1/health":
                self._send(HTTPStatus.OK, {"status": "ok", "model_loaded": service.model is not None})
            elif self.path == "/v1/model":
                model = service.model
                if model is None:
                    self._send(HTTPStatus.NOT_FOUND, {"error": "no model installed"})
                else:
                    self._send(
                        HTTPStatus.OK,
                        {
                            "model": model.manifest.model,
                            "version": model.version,
                            "target": model.manifest.target,
                            "sha256": model.sha256,
                        },
                    )
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            body = self._read_body()
            if body is None:
                return
            if self.path == "/v1/predict":
                self._predict(body)
            elif self.path == "/v1/predict/stream":
                self._stream(body)
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

        def _predict(self, body: bytes) -> None:
            try:
                request = json.loads(body)
                if not isinstance(request, dict) or "inputs" not in request:
                    raise InferenceError('body must be a JSON object with "inputs"')
                self._send(HTTPStatus.OK, service.predict(request["inputs"]))
            except json.JSONDecodeError as exc:
                self._send(HTTPStatus.BAD_REQUEST, {"error": f"malformed JSON: {exc}"})
            except InferenceError as exc:
                status = HTTPStatus.SERVICE_UNAVAILABLE if service.model is None else HTTPStatus.BAD_REQUEST
                self._send(status, {"error": str(exc)})

        def _stream(self, body: bytes) -> None:
            lines = []
            for number, line in enumerate(body.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    lines.append(service.predict(json.loads(line)))
                except (json.JSONDecodeError, InferenceError) as exc:
                    lines.append({"error": f"line {number}: {exc}"})
            data = b"".join(json.dumps(item).encode() + b"\n" for item in lines)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
