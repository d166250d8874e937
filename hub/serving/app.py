"""The standalone serving app (``edgefleet serve``): the V2 router and ``/metrics`` on a registry the
caller owns. The hub mounts the same router next to its own API (see docs/serving.md)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from hub.serving.backends import load_backend
from hub.serving.config import ModelSpec
from hub.serving.manager import Loader, ModelManager
from hub.serving.metrics import ServingMetrics
from hub.serving.oip import build_router
from hub.serving.repository import ModelRepository, StaticRepository


def add_metrics_endpoint(app: FastAPI, registry: CollectorRegistry) -> None:
    """Expose ``registry`` at ``GET /metrics`` in Prometheus text format."""

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def create_app(
    specs: Iterable[ModelSpec] = (),
    *,
    registry: CollectorRegistry,
    repository: ModelRepository | None = None,
    loader: Loader = load_backend,
    token: str | None = None,
) -> FastAPI:
    """A FastAPI app serving ``specs`` (loaded at start-up) and whatever ``repository`` can resolve.

    ``repository`` defaults to a :class:`StaticRepository` of ``specs``. The manager is ``app.state.manager``.
    With ``token``, every route but the liveness and readiness probes needs ``Authorization: Bearer <token>``.
    """
    specs = list(specs)
    manager = ModelManager(repository or StaticRepository(specs), ServingMetrics(registry), loader=loader)
    app = FastAPI(title="EdgeFleet serving")
    app.state.manager = manager
    app.include_router(build_router(manager, startup=specs))
    add_metrics_endpoint(app, registry)
    if token is not None:
        require_token(app, token)
    return app


_OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


def require_token(app: FastAPI, token: str) -> None:
    """Refuse (401) any request without ``Authorization: Bearer <token>``, except the health probes."""
    expected = f"Bearer {token}".encode()

    @app.middleware("http")
    async def check_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path not in _OPEN_PATHS:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse({"error": "missing or wrong API token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return await call_next(request)
