"""What the REST API refuses before routing, and how it answers any `hub.errors.HubError`.

`RequestLimits` answers 413 to a body over the limit (by ``Content-Length`` or while it streams in) and 422
to a NUL byte in the path or query, which no name holds and PostgreSQL cannot compare.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.errors import HubError, InvalidRequestError, PayloadTooLargeError


def error_response(exc: HubError) -> JSONResponse:
    """The API's answer to ``exc``: its status, class name, one-line detail and headers."""
    return JSONResponse(
        status_code=exc.status_code,
        content={"error": type(exc).__name__, "detail": str(exc)},
        headers=exc.headers(),
    )


def invalid_request(exc: RequestValidationError) -> InvalidRequestError:
    """One line naming each refused field (its input is never echoed: it may be NaN, huge or binary)."""
    fields = [f"{'.'.join(str(part)[:64] for part in error['loc'])}: {error['msg']}" for error in exc.errors()[:5]]
    return InvalidRequestError("; ".join(fields) or "invalid request")


class RequestLimits:
    """ASGI middleware: refuse bodies over ``max_body_bytes`` and NUL bytes in the URL."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the URL and the declared length; read a body streamed without a length up to the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        if _header(scope, b"content-length") is not None:  # within the limit; the server enforces the length
            await self.app(scope, receive, send)
            return
        # Streamed without a length: read it here, up to the limit, then hand it on.
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                await error_response(self._too_large())(scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    def _refusal(self, scope: Scope) -> HubError | None:
        if "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            return InvalidRequestError("the URL contains a NUL byte")
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                return InvalidRequestError(f"Content-Length {length[:32]!r} is not a byte count")
            if int(length) > self.max_body_bytes:
                return self._too_large()
        return None

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(f"request body exceeds {self.max_body_bytes} bytes")


def _header(scope: Scope, name: bytes) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None
