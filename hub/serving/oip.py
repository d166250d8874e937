"""The Open Inference Protocol (KServe V2) over HTTP as a FastAPI router, plus Triton's model
repository extension (index, load, unload) and model configuration endpoint.

Every :class:`ServingError` becomes ``{"error": message}`` with its status code in one place,
:func:`error_response`, applied by the router's route class so the router works in any app.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from hub.serving.config import ModelSpec
from hub.serving.errors import InvalidInputError, ModelUnavailableError, OverloadedError, ServingError
from hub.serving.manager import ModelManager
from hub.serving.protocol import HEADER_LENGTH, encode_response, parse_request, requested_outputs
from hub.serving.triton import triton_config

log = logging.getLogger(__name__)

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration"]


def error_response(exc: ServingError) -> JSONResponse:
    """The one mapping of serving errors to HTTP: status, ``{"error": ...}``, Retry-After on overload."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, OverloadedError) else None
    return JSONResponse({"error": str(exc)}, status_code=exc.status_code, headers=headers)


class ServingRoute(APIRoute):
    """Routes whose ServingErrors are answered by :func:`error_response`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ServingError as exc:
                if exc.status_code >= 500:
                    log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc)
                return error_response(exc)

        return handle


def _server_version() -> str:
    try:
        return metadata.version("edgefleet")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _decode_body(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.lower())
    if wbits is None:
        raise InvalidInputError(f"unsupported Content-Encoding {encoding!r}")
    try:
        return zlib.decompress(body, wbits)
    except zlib.error as exc:
        raise InvalidInputError(f"body is not valid {encoding}: {exc}") from exc


def _header_length(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInputError(f"{HEADER_LENGTH} must be an integer, got {raw!r}") from None


async def _json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise InvalidInputError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidInputError("body must be a JSON object")
    return parsed


def _version_parameter(body: dict[str, Any], allowed: set[str]) -> str | None:
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInputError("'parameters' must be an object")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidInputError(f"unsupported parameters {unknown}; this server takes {sorted(allowed)}")
    version = params.get("version")
    return None if version is None else str(version)


def build_router(
    manager: ModelManager, *, startup: Iterable[ModelSpec] = (), server_name: str = "edgefleet"
) -> APIRouter:
    """The V2 endpoints over ``manager``, ready to include in any FastAPI app (the hub's, or the
    standalone one). Its lifespan, merged into the app's, loads ``startup`` and unloads all at shutdown."""
    startup = list(startup)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        await manager.start(startup)
        try:
            yield
        finally:
            await manager.close()

    router = APIRouter(route_class=ServingRoute, tags=["serving"], lifespan=lifespan)
    server_version = _server_version()

    # the hot path first: routes are matched in order
    @router.post("/v2/models/{name}/infer")
    @router.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        model = manager.get(name, version)
        with model.observe():
            body = _decode_body(await request.body(), request.headers.get("content-encoding"))
            req, arrays = parse_request(body, _header_length(request.headers.get(HEADER_LENGTH)))
            chosen = requested_outputs(req, model.output_names)
            outputs = await model.infer(arrays, req.timeout_s())
            payload, json_length = encode_response(model.name, model.version, req.id, outputs, chosen)
        if json_length is None:
            return Response(payload, media_type="application/json")
        return Response(payload, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_length)})

    @router.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        if not manager.ready:
            raise ModelUnavailableError("server is starting or stopping")
        return {"ready": True}

    @router.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": server_name, "version": server_version, "extensions": EXTENSIONS}

    @router.get("/v2/models/{name}")
    @router.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        model = manager.get(name, version)
        return model.metadata(manager.versions(name))

    @router.get("/v2/models/{name}/ready")
    @router.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        model = manager.get(name, version)
        return {"name": model.name, "version": model.version, "ready": True}

    @router.get("/v2/models/{name}/config")
    @router.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str | None = None) -> dict[str, Any]:
        model = manager.get(name, version)
        return triton_config(
            model.name, model.backend.platform, model.backend.inputs, model.backend.outputs, model.batching
        )

    @router.post("/v2/repository/index")
    async def repository_index(request: Request) -> list[dict[str, str]]:
        only_ready = bool((await _json_body(request)).get("ready", False))
        rows = manager.index()
        return [r for r in rows if r["state"] == "READY"] if only_ready else rows

    @router.post("/v2/repository/models/{name}/load")
    async def load(name: str, request: Request) -> dict[str, str]:
        version = _version_parameter(await _json_body(request), {"version"})
        model = await manager.load(name, version)
        return {"name": model.name, "version": model.version, "state": "READY"}

    @router.post("/v2/repository/models/{name}/unload")
    async def unload(name: str, request: Request) -> dict[str, Any]:
        version = _version_parameter(await _json_body(request), {"version", "unload_dependents"})
        return {"name": name, "unloaded": await manager.unload(name, version)}

    return router
