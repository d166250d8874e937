"""Serve registry models from the hub: the serving tier's `ModelRepository` over the registry and store.

Heavy models are published as variants for a serving target (a target tagged ``serving``, e.g.
``cloud-gpu``); the hub's ``/v2`` endpoints load them on demand from the content-addressed store, so
devices offload to the same versions the registry lists.
"""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from hub.auth import Role, allow
from hub.bundles.store import ArtifactStore
from hub.errors import NotFoundError
from hub.registry import Registry, Variant
from hub.serving.config import ModelSpec
from hub.serving.errors import ModelNotFoundError
from hub.serving.manager import ModelManager
from hub.serving.metrics import ServingMetrics
from hub.serving.oip import build_router
from hub.serving.repository import ModelRef
from targets import TARGETS

_RUNTIMES = {"onnxruntime": "onnxruntime", "torchscript": "torchscript"}


def _servable(variant: Variant) -> bool:
    target = TARGETS.get(variant.target)
    return target is not None and "serving" in target.tags and variant.runtime in _RUNTIMES


class RegistryRepository:
    """Every version with a variant for a serving target, resolved to its artifact in the store."""

    def __init__(self, registry: Registry, store: ArtifactStore) -> None:
        self.registry = registry
        self.store = store

    def index(self) -> list[ModelRef]:
        """Model versions that have a servable variant."""
        refs = []
        for model in self.registry.list_models():
            for version in self.registry.list_versions(model.name):
                if any(_servable(v) for v in self.registry.list_variants(model.name, version.version)):
                    refs.append(ModelRef(model.name, version.version))
        return refs

    def resolve(self, name: str, version: str | None = None) -> ModelSpec:
        """The spec of ``name`` at ``version`` (the highest semver with a servable variant when None)."""
        try:
            versions = [version] if version is not None else [v.version for v in self.registry.list_versions(name)]
            for candidate in versions:
                variants = [v for v in self.registry.list_variants(name, candidate) if _servable(v)]
                if variants:
                    variant = variants[0]
                    return ModelSpec(
                        name=name,
                        version=candidate,
                        path=self.store.path(variant.artifact_sha256),
                        runtime=_RUNTIMES[variant.runtime],  # type: ignore[arg-type]
                    )
        except NotFoundError as exc:
            raise ModelNotFoundError(str(exc)) from exc
        raise ModelNotFoundError(f"{name}:{version or 'latest'} has no variant for a serving target")


def serving_router(registry: Registry, store: ArtifactStore, prometheus: CollectorRegistry) -> APIRouter:
    """The Open Inference Protocol endpoints over registry models, for the hub's app: open to viewers (inference
    changes nothing; models load on demand anyway)."""
    manager = ModelManager(RegistryRepository(registry, store), ServingMetrics(prometheus))
    router = APIRouter(dependencies=allow(Role.VIEWER))
    router.include_router(build_router(manager))
    return router
