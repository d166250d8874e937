"""The hub's REST API (FastAPI): models, versions, variants, devices, deployments, health.

Every route but ``/health`` needs an API token whose role it names (`hub.auth.allow`); every change is written to
the audit log (`hub.auth.AuditMiddleware`). Errors: every `hub.errors.HubError` is answered with its ``status_code``
(and headers) by one handler, and a request that fails validation as `InvalidRequestError` (422), both as
``{"error": class, "detail": one line}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from fleet.wire.messages import DeviceId, Name
from hub.app import Hub
from hub.auth import AuditMiddleware, Authenticator, Role, allow
from hub.auth.api import create_access_router
from hub.bundles.api import create_bundles_router
from hub.bundles.upload_api import create_upload_router
from hub.captures.api import create_captures_router
from hub.console import mount_console
from hub.devices.api import create_broker_router, create_devices_router, refresh_broker_auth, secret_answer
from hub.errors import HubError, NotFoundError
from hub.monitoring.api import create_monitoring_router
from hub.policies.api import create_policies_router
from hub.registry import AccessStore
from hub.registry.tables import DEVICE_SECRET_FIELDS
from hub.request_limits import RequestLimits, error_response, invalid_request
from hub.rollouts.api import create_rollouts_router
from hub.serving.from_registry import serving_router

# Bounded so the registry can store what it accepts: each part fits PostgreSQL's INTEGER column.
SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
SemVer = Annotated[str, Field(max_length=64, pattern=SEMVER_PATTERN, examples=["1.2.0"])]
ModelName = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]  # as `Name`
LabelKey = Annotated[str, Field(max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")]
LabelValue = Annotated[str, Field(max_length=256, pattern=r"^[^\x00-\x1f]*$")]


class VersionIn(BaseModel):
    """A new model version."""

    version: SemVer
    notes: str = Field(default="", max_length=10_000, pattern=r"^[^\x00]*$")


class DeviceIn(BaseModel):
    """A device to provision."""

    device_id: DeviceId
    target: Name
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)


class DeploymentIn(BaseModel):
    """Bring devices to a model version."""

    model: Name
    version: SemVer
    device_ids: list[DeviceId] = Field(min_length=1, max_length=100_000)
    allow_downgrade: bool = False
    shadow: bool = False


class ErrorOut(BaseModel):
    """Every error answer: the `hub.errors` class and a one-line reason."""

    error: str
    detail: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in (
        (404, "unknown model, version, device, deployment or rollout"),
        (409, "exists already, or conflicts with the current state"),
        (413, "request body over the limit"),
        (422, "invalid request"),
    )
}


def create_app(hub: Hub) -> FastAPI:
    """The REST application bound to a started ``hub``."""
    app = FastAPI(
        title="EdgeFleet hub",
        version="1",
        description="Models, variants, devices and deployments.",
        responses=ERROR_RESPONSES,
        docs_url=None,  # served offline by hub.console
        redoc_url=None,  # ReDoc loads its script from a CDN
    )
    registry = hub.registry
    access = AccessStore(hub.db, audit_max_age_s=hub.settings.audit_max_age_s)
    app.state.authenticator = Authenticator(access, hub.logins)
    app.add_middleware(AuditMiddleware, store=access)
    if hub.settings.trusted_proxies:  # around the audit and the routes: both see the forwarded client
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=hub.settings.trusted_proxies)

    app.add_middleware(RequestLimits, max_body_bytes=hub.settings.api_max_body_bytes)

    @app.exception_handler(HubError)
    async def _hub_error(_request: Request, exc: HubError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(invalid_request(exc))

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and the broker connection; anonymous, so it tells nothing about the fleet."""
        return {"status": "ok", "broker_connected": bool(hub.broker and hub.broker.connected)}

    @app.get("/models", dependencies=allow(Role.VIEWER))
    def models() -> list[dict[str, Any]]:
        """All models with their versions (highest first)."""
        return [
            {
                "name": m.name,
                "description": m.description,
                "versions": [v.version for v in registry.list_versions(m.name)],
            }
            for m in registry.list_models()
        ]

    @app.post("/models/{name}/versions", status_code=201, dependencies=allow(Role.OPERATOR))
    def add_version(name: ModelName, body: VersionIn) -> dict[str, Any]:
        """Register a semver version."""
        row = registry.add_version(name, body.version, body.notes)
        return {"model": name, "version": row.version}

    @app.get("/models/{name}/versions", dependencies=allow(Role.VIEWER))
    def versions(name: str) -> list[dict[str, Any]]:
        """Versions of one model."""
        rows = registry.list_versions(name)
        if not rows:
            raise NotFoundError(f"model {name} has no versions")
        return [{"version": v.version, "notes": v.notes, "created_at": v.created_at} for v in rows]

    @app.get("/models/{name}/versions/{version}/variants", dependencies=allow(Role.VIEWER))
    def variants(name: str, version: str) -> list[dict[str, Any]]:
        """Per-target variants of one version."""
        return [v.model_dump(exclude={"id", "version_id"}) for v in registry.list_variants(name, version)]

    @app.get("/devices", dependencies=allow(Role.VIEWER, Role.PROVISIONER))
    def devices() -> list[dict[str, Any]]:
        """Inventory (credentials and their hashes never included)."""
        return [d.model_dump(exclude=set(DEVICE_SECRET_FIELDS)) for d in registry.list_devices()]

    @app.post("/devices", status_code=201, dependencies=allow(Role.PROVISIONER))
    def provision(body: DeviceIn) -> dict[str, Any]:
        """Provision a device; the secret appears only in this answer, with the TUF trust root."""
        device, secret = registry.provision_device(body.device_id, body.target, body.labels)
        hub.known.forget(device.id)  # it may have been heard of while unprovisioned
        refresh_broker_auth(hub)  # as POST /devices/kit does: Mosquitto and NATS learn the new login
        return secret_answer(hub, device, secret)

    @app.get("/devices/{device_id}", dependencies=allow(Role.VIEWER, Role.PROVISIONER))
    def device(device_id: str) -> dict[str, Any]:
        """One device (credentials and their hashes never included)."""
        return registry.get_device(device_id).model_dump(exclude=set(DEVICE_SECRET_FIELDS))

    @app.post("/deployments", status_code=201, dependencies=allow(Role.OPERATOR))
    def deploy(body: DeploymentIn) -> dict[str, Any]:
        """Send a version to devices (each gets its target's variant)."""
        deployment = hub.deploy(
            body.model, body.version, body.device_ids, allow_downgrade=body.allow_downgrade, shadow=body.shadow
        )
        return deployment.model_dump()

    @app.get("/deployments", dependencies=allow(Role.VIEWER))
    def deployments() -> list[dict[str, Any]]:
        """All deployments, newest first."""
        return [d.model_dump() for d in registry.list_deployments()]

    @app.get("/deployments/{deployment_id}", dependencies=allow(Role.VIEWER))
    def deployment(deployment_id: str) -> dict[str, Any]:
        """A deployment with per-device progress."""
        row = registry.get_deployment(deployment_id)
        return {**row.model_dump(), "devices": [d.model_dump() for d in registry.deployment_devices(deployment_id)]}

    app.include_router(create_access_router(access))
    app.include_router(create_upload_router(hub))
    app.include_router(create_devices_router(hub))
    app.include_router(create_broker_router(hub))
    app.include_router(create_captures_router(hub))
    app.include_router(create_bundles_router(hub))  # HTTP downloads: device logins, or a viewer token (a CDN)
    app.include_router(create_rollouts_router(hub))
    app.include_router(create_monitoring_router(hub))
    app.include_router(create_policies_router(hub))
    # Heavy models: the Open Inference Protocol over registry variants for serving targets (/v2/...).
    app.include_router(serving_router(registry, hub.store, hub.monitoring.prometheus))
    mount_console(app, hub)  # /ui, /console/api and an offline /docs
    return app
