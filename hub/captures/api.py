"""REST routes for captured input samples: export a model version's as ``.npz``, delete a model's.

Both need an operator token: captured inputs are the devices' raw data (camera frames, sensor readings), more
sensitive than the aggregated telemetry a viewer reads. Errors are `hub.errors` ones: an unknown version is
`NotFoundError` (404); a bad cohort selector or captures of different shapes `InvalidRequestError` (422).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Response

from fleet.errors import FleetError
from hub.auth import Role, allow
from hub.captures.export import export_samples, samples_npz
from hub.errors import InvalidRequestError

if TYPE_CHECKING:
    from hub.app import Hub

NPZ_MEDIA_TYPE = "application/x-npz"


def create_captures_router(hub: Hub) -> APIRouter:
    """Capture routes bound to ``hub``'s registry and capture store."""
    router = APIRouter(prefix="/models/{name}", tags=["captures"])

    @router.get(
        "/versions/{version}/captures",
        dependencies=allow(Role.OPERATOR),
        response_class=Response,
        responses={200: {"content": {NPZ_MEDIA_TYPE: {}}, "description": "inputs, labels, confidences, ..."}},
    )
    def export(
        name: str,
        version: str,
        cohort: str | None = Query(default=None, max_length=1024, description="label selector, e.g. site=north"),
    ) -> Response:
        """The version's captured inputs with the answers the devices gave, as one ``.npz`` (no pickle)."""
        hub.registry.get_version(name, version)  # 404 for an unknown version
        try:
            arrays = export_samples(hub.registry, hub.captures, name, version, cohort)
        except FleetError as exc:
            raise InvalidRequestError(str(exc)) from exc
        return Response(
            samples_npz(arrays),
            media_type=NPZ_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{name}-{version}-captures.npz"'},
        )

    @router.delete("/captures", dependencies=allow(Role.OPERATOR))
    def delete(
        name: str, version: str | None = Query(default=None, max_length=64, description="only this version")
    ) -> dict[str, Any]:
        """Delete the model's captured inputs (of one version, or of every version)."""
        return {"model": name, "version": version, "deleted_messages": hub.captures.delete(name, version)}

    return router
