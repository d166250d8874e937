"""The bundle archive: a zip of manifest, model (and weights), self-test vectors, drift reference and data
contract (member names in `fleet.wire.bundle`), built byte-identically from identical inputs."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from fleet.wire.bundle import CONTRACT_NAME, MANIFEST_NAME, REFERENCE_NAME, SELFTEST_NAME, BundleManifest
from fleet.wire.contract import DataContract
from hub.errors import InvalidRequestError

__all__ = ["build_bundle"]

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
