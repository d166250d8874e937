"""Serve the console at ``/ui`` (a static page calling the REST API), its data routes, and ``/docs``
(Swagger UI) from files in the package, so both work without internet access."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from hub.console.api import create_console_router

if TYPE_CHECKING:
    from hub.app import Hub

STATIC = Path(__file__).parent / "static"


def mount_console(app: FastAPI, hub: Hub) -> None:
    """Add ``/ui``, ``/ui/static``, ``/console/api`` and an offline ``/docs`` to ``app`` (created with
    ``docs_url=None``)."""
    app.include_router(create_console_router(hub))
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")

    @app.get("/ui", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url="/ui/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/ui/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/ui/static/favicon.svg",
        )
