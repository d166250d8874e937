"""The upload of one prepared variant to the hub: an unsigned bundle (`hub.bundles.archive`) plus ``metrics.json``,
the variant's measured metrics. The hub reads it with the devices' own reader (`agent.bundle.read_bundle`: known
member names, size limits, no pickle), rebuilds the bundle from the parts, signs and registers it."""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.bundle import LoadedBundle, read_bundle
from agent.errors import BundleError
from fleet.wire.contract import DataContract
from hub.bundles.archive import build_bundle
from hub.bundles.conversions import PreparedVariant
from hub.errors import InvalidRequestError

__all__ = ["METRICS_NAME", "UPLOAD_MEDIA_TYPE", "Upload", "pack_upload", "read_upload"]

METRICS_NAME = "metrics.json"
UPLOAD_MEDIA_TYPE = "application/octet-stream"  # a zip; the generic type every HTTP tool can send
MAX_METRICS = 32


@dataclass(frozen=True)
class Upload:
    """An uploaded variant: the bundle's parts and its metrics."""

    bundle: LoadedBundle
    metrics: dict[str, float | None]


def pack_upload(variant: PreparedVariant, contract: DataContract | None) -> bytes:
    """The upload archive of ``variant`` (its bundle carrying ``contract``)."""
    weights = variant.weights_path.read_bytes() if variant.weights_path is not None else None
    archive = build_bundle(
        variant.manifest,
        variant.model_path.read_bytes(),
        variant.inputs,
        variant.outputs,
        variant.reference,
        weights,
        contract,
    )
    out = io.BytesIO(archive)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr(METRICS_NAME, json.dumps(variant.metrics, sort_keys=True))
    return out.getvalue()


def read_upload(path: Path) -> Upload:
    """The upload in the file at ``path``, or `InvalidRequestError` saying what is wrong with it."""
    try:
        bundle = read_bundle(path)
        with zipfile.ZipFile(path) as archive:
            raw = archive.read(METRICS_NAME) if METRICS_NAME in archive.namelist() else b"{}"
    except BundleError as exc:
        raise InvalidRequestError(f"not a bundle upload: {exc}") from exc
    return Upload(bundle, _metrics(raw))


def _metrics(raw: bytes) -> dict[str, float | None]:
    try:
        metrics: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"{METRICS_NAME} is not JSON: {exc}") from exc
    if not isinstance(metrics, dict) or len(metrics) > MAX_METRICS:
        raise InvalidRequestError(f"{METRICS_NAME} must be an object of at most {MAX_METRICS} metrics")
    for key, value in metrics.items():
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if len(key) > 64 or not (value is None or number):
            raise InvalidRequestError(f"{METRICS_NAME}: metric {key[:64]!r} must be a finite number or null")
    return metrics
