"""REST route for publishing a variant: ``POST /models/{name}/versions/{version}/variants`` with an upload
(`hub.bundles.upload`) as the body; the hub signs the bundle, stores it and registers the variant.

It needs an operator token. Uploads are bounded by ``api_max_body_bytes`` like every request (413 above it).
Errors are `hub.errors` ones: a malformed upload, a manifest naming another model or version, an unknown target or
a version that is not semver `InvalidRequestError` (422); a variant already registered `ConflictError` (409).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from hub.auth import Role, allow
from hub.bundles.upload import UPLOAD_MEDIA_TYPE, read_upload
from hub.errors import InvalidRequestError
from targets import TargetError, get_target

if TYPE_CHECKING:
    from hub.app import Hub


def create_upload_router(hub: Hub) -> APIRouter:
    """The variant upload route bound to ``hub``."""
    router = APIRouter(tags=["models"])

    def publish(name: str, version: str, body: bytes) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="edgefleet-upload-") as tmp:
            upload_path = Path(tmp) / "upload.zip"
            upload_path.write_bytes(body)
            upload = read_upload(upload_path)
            bundle = upload.bundle
            manifest = bundle.manifest
            if (manifest.model, manifest.version) != (name, version):
                raise InvalidRequestError(
                    f"the upload's manifest is for {manifest.model}:{manifest.version}, not {name}:{version}"
                )
            try:
                get_target(manifest.target)
            except TargetError as exc:
                raise InvalidRequestError(str(exc)) from exc
            model_path = Path(tmp) / "model"  # fixed names: nothing from the upload becomes a path
            model_path.write_bytes(bundle.model_bytes)
            weights_path = None
            if bundle.weights is not None:
                weights_path = Path(tmp) / "weights"
                weights_path.write_bytes(bundle.weights)
            published = hub.publish(
                manifest,
                model_path,
                bundle.selftest_inputs,
                bundle.selftest_outputs,
                reference=bundle.reference,
                metrics=upload.metrics,
                weights_path=weights_path,
                contract=bundle.contract,
            )
        return {
            "model": name,
            "version": version,
            "target": manifest.target,
            "precision": manifest.precision,
            "bundle_sha256": published.bundle_sha256,
            "tuf_target": published.tuf_target,
        }

    @router.post(
        "/models/{name}/versions/{version}/variants",
        status_code=201,
        dependencies=allow(Role.OPERATOR),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {UPLOAD_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def upload(name: str, version: str, request: Request) -> dict[str, Any]:
        """Sign, store and register one variant of ``name:version`` from an upload (unsigned bundle + metrics)."""
        body = await request.body()
        return await run_in_threadpool(publish, name, version, body)

    return router
