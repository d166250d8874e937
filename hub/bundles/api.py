"""``GET /bundles/{sha256}`` and ``GET /bundles/chunk-index.{sha256}``: bundles for HTTP(S) downloads.

Devices log in with HTTP Basic, their id and broker secret (`hub.auth.devices.DeviceAuthenticator`). A device
may fetch any bundle published as a variant for its own target, and that bundle's chunk index: nothing built for
other hardware, and no other blob of the artifact store (source models, weights). Every device of a target may
already read the TUF metadata naming those bundles, and the MQTT chunk broadcast is heard by every device
subscribed; tying a download to an order would cost a query over all deployments per request and gain nothing
over that. Anything else answers 404, whether or not it exists. An API token of role ``viewer`` (or above) may
fetch every published bundle: that is how a CDN or mirror pulls from the hub as its origin.

On the local store, bundles are streamed from disk with ``Range`` support (206 Partial Content with
``Content-Range``, 416 with ``Content-Range: bytes */size`` for a range past the end, multipart for several
ranges, ``If-Range``) and a strong ``ETag``, the digest. On S3 the answer is a 302 to a pre-signed link valid
``bundle_link_ttl_s``: the bytes then flow from the bucket, not through the hub (ranges, ETag and 416 are the
object store's own), so replicas behind a load balancer stay small; a device resuming after the link expired
asks the hub again and gets a fresh one. The device drops its credentials on that redirect. Chunk indexes are
computed by the hub and answered whole. Answers to devices are ``Cache-Control: private``, to tokens ``public``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.security import HTTPBasic

from hub.auth.authenticator import Authenticator
from hub.auth.dependencies import bearer, client_address
from hub.auth.devices import DeviceAuthenticator
from hub.auth.roles import Role, permits
from hub.bundles.chunking import chunk_index
from hub.bundles.store import S3ArtifactStore
from hub.errors import NotFoundError, PermissionDeniedError

if TYPE_CHECKING:
    from hub.app import Hub

device_login = HTTPBasic(
    auto_error=False, scheme_name="deviceLogin", description="A device's id and secret (its broker login)."
)
_NAME = re.compile(r"^(chunk-index\.)?([0-9a-f]{64})$")
_CACHE = "max-age=86400, immutable"  # content-addressed: a name's bytes never change


def create_bundles_router(hub: Hub) -> APIRouter:
    """The bundle download routes of ``hub``."""
    router = APIRouter(tags=["bundles"])
    devices = DeviceAuthenticator(hub.registry, hub.logins)

    @router.get(
        "/bundles/{name}",
        response_class=Response,
        dependencies=[Depends(device_login), Depends(bearer)],  # declares both schemes; checked below
        responses={
            200: {"content": {"application/octet-stream": {}}, "description": "the bundle or chunk index"},
            206: {"content": {"application/octet-stream": {}}, "description": "the requested range"},
            302: {"description": "S3 store: a pre-signed link to the bundle"},
            401: {"description": "no or wrong credentials (device: HTTP Basic; API token: Bearer)"},
            416: {"description": "range past the end of the bundle"},
        },
    )
    def bundle(name: str, request: Request) -> Response:
        """A bundle (or its chunk index) published for the calling device's target (any target for a token)."""
        target = _caller_target(request, devices)
        match = _NAME.match(name)
        sha256 = match.group(2) if match else ""
        variant = hub.registry.variant_by_bundle(sha256) if match else None
        if variant is None or target not in (None, variant.target):
            raise NotFoundError(f"no bundle {name[:80]!r} is published for target {target or 'any'}")
        # A device's copy is its own; a CDN pulling with a token may keep and serve it (its operator's choice).
        headers = {"ETag": f'"{name}"', "Cache-Control": f"{'public' if target is None else 'private'}, {_CACHE}"}
        if match and match.group(1):
            transfer = hub.transfer  # None on a telemetry worker: compute the index here
            index = transfer.chunk_index(sha256) if transfer is not None else chunk_index(hub.store.read(sha256))
            if index is None:
                raise NotFoundError(f"bundle {sha256[:12]} has too many pieces for a chunk index")
            return Response(index.encode(), media_type="application/octet-stream", headers=headers)
        store = hub.store
        store.size(sha256)  # NotFoundError (404) when the store lost it
        if isinstance(store, S3ArtifactStore):
            link = store.download_url(sha256, expires_s=hub.settings.bundle_link_ttl_s)
            return RedirectResponse(link, status_code=302, headers={"Cache-Control": "no-store"})
        return FileResponse(store.path(sha256), media_type="application/octet-stream", headers=headers)

    return router


def _caller_target(request: Request, devices: DeviceAuthenticator) -> str | None:
    """The calling device's target (HTTP Basic), or None for an API token of role viewer or above (Bearer)."""
    authorization = request.headers.get("authorization")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return devices.authenticate(authorization, client_address(request)).target
    authenticator: Authenticator = request.app.state.authenticator
    principal = authenticator.authenticate(token.strip(), client_address(request))
    request.state.principal = principal
    if not permits(principal.role, frozenset({Role.VIEWER})):
        raise PermissionDeniedError(f"token {principal.token_id} ({principal.role}) may not download bundles")
    return None
