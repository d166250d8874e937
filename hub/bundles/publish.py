"""Building and publishing bundles: zip of manifest, model, self-test vectors, drift reference and data
contract; stored and TUF-signed."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleet.wire.bundle import CONTRACT_NAME, MANIFEST_NAME, REFERENCE_NAME, SELFTEST_NAME, BundleManifest
from fleet.wire.contract import DataContract
from hub.bundles.store import ArtifactStore
from hub.bundles.tuf_repository import TufRepository
from hub.errors import InvalidRequestError
from hub.registry import Registry, Variant

_FIXED_DATE = (2020, 1, 1, 0, 0, 0)  # identical inputs give byte-identical bundles


def build_bundle(
    manifest: BundleManifest,
    model_bytes: bytes,
    selftest_inputs: np.ndarray,
    selftest_outputs: np.ndarray,
    reference: dict[str, Any] | None = None,
    weights: bytes | None = None,
    contract: DataContract | None = None,
) -> bytes:
    """Return the bundle archive bytes (deterministic)."""
    if (weights is None) != (manifest.weights_file is None):
        raise InvalidRequestError("weights bytes and manifest.weights_file go together")
    if len(selftest_inputs) != len(selftest_outputs) or len(selftest_inputs) == 0:
        raise InvalidRequestError("self-test needs the same non-zero number of inputs and outputs")
    vectors = io.BytesIO()
    np.savez(vectors, inputs=np.ascontiguousarray(selftest_inputs), outputs=np.ascontiguousarray(selftest_outputs))
    members = {
        MANIFEST_NAME: manifest.model_dump_json(indent=2).encode(),
        manifest.model_file: model_bytes,
        SELFTEST_NAME: vectors.getvalue(),
    }
    if weights is not None and manifest.weights_file is not None:
        members[manifest.weights_file] = weights
    if reference is not None:
        members[REFERENCE_NAME] = json.dumps(reference, sort_keys=True).encode()
    if contract is not None:
        members[CONTRACT_NAME] = contract.model_dump_json(indent=2).encode()
    # Model and weights are stored, not deflated: a retrained layer then changes only its own bytes, and
    # content-defined chunking lets a device that holds the previous version fetch just those.
    stored = {manifest.model_file, manifest.weights_file}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
            info.compress_type = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return out.getvalue()


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
