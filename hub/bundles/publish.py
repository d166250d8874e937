"""Publishing bundles (`hub.bundles.archive`): stored, TUF-signed and registered as a variant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleet.wire.bundle import BundleManifest
from fleet.wire.contract import DataContract
from hub.bundles.archive import build_bundle
from hub.bundles.store import ArtifactStore
from hub.bundles.tuf_repository import TufRepository
from hub.registry import Registry, Variant

__all__ = ["PublishedVariant", "build_bundle", "publish_variant", "tuf_target_path"]


def tuf_target_path(manifest: BundleManifest) -> str:
    """Signed path of a bundle: one per model, version, target and precision."""
    return f"bundles/{manifest.model}/{manifest.version}/{manifest.target}-{manifest.precision}.zip"


@dataclass(frozen=True)
class PublishedVariant:
    """What publishing produced."""

    variant: Variant
    bundle_sha256: str
    tuf_target: str


def publish_variant(
    registry: Registry,
    store: ArtifactStore,
    tuf: TufRepository,
    manifest: BundleManifest,
    model_path: Path,
    selftest_inputs: np.ndarray,
    selftest_outputs: np.ndarray,
    *,
    reference: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    weights_path: Path | None = None,
    contract: DataContract | None = None,
) -> PublishedVariant:
    """Store the model and its bundle, sign the bundle with TUF and register the variant."""
    model_bytes = model_path.read_bytes()
    artifact_sha = store.put_bytes(model_bytes)
    weights = weights_path.read_bytes() if weights_path is not None else None
    bundle = build_bundle(manifest, model_bytes, selftest_inputs, selftest_outputs, reference, weights, contract)
    bundle_sha = store.put_bytes(bundle)
    target_path = tuf_target_path(manifest)
    tuf.add_target(
        target_path,
        bundle,
        {
            "model": manifest.model,
            "version": manifest.version,
            "target": manifest.target,
            "precision": manifest.precision,
        },
    )
    variant = registry.add_variant(
        manifest.model,
        manifest.version,
        target=manifest.target,
        runtime=manifest.runtime,
        precision=manifest.precision,
        artifact_sha256=artifact_sha,
        size_bytes=len(model_bytes),
        bundle_sha256=bundle_sha,
        bundle_size=len(bundle),
        tuf_target=target_path,
        metrics=metrics,
    )
    return PublishedVariant(variant, bundle_sha, target_path)
