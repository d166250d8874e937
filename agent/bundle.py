"""Reading a bundle archive safely: known member names only, size limits, no pickle, no extraction."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from agent.errors import BundleError
from fleet.errors import ProtocolError
from fleet.wire.bundle import CONTRACT_NAME, MANIFEST_NAME, REFERENCE_NAME, SELFTEST_NAME, BundleManifest
from fleet.wire.contract import DataContract, parse_contract

MAX_UNCOMPRESSED_BYTES = 2 * 1024**3
MAX_MEMBERS = 16


@dataclass(frozen=True)
class LoadedBundle:
    """The contents of a verified bundle, in memory."""

    manifest: BundleManifest
    model_bytes: bytes
    selftest_inputs: np.ndarray
    selftest_outputs: np.ndarray
    reference: dict[str, Any] | None
    weights: bytes | None = None
    contract: DataContract | None = None


def read_bundle(path: Path) -> LoadedBundle:
    """Open the archive at ``path`` and return its parts, or raise `BundleError` saying what is wrong."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_members(path, infos)
            manifest = _manifest(path, archive.read(MANIFEST_NAME))
            names = {info.filename for info in infos}
            if manifest.model_file not in names:
                raise BundleError(f"{path.name}: manifest names model file {manifest.model_file!r}, not in the archive")
            model_bytes = archive.read(manifest.model_file)
            if manifest.weights_file is not None and manifest.weights_file not in names:
                raise BundleError(
                    f"{path.name}: manifest names weights file {manifest.weights_file!r}, not in the archive"
                )
            weights = archive.read(manifest.weights_file) if manifest.weights_file else None
            inputs, outputs = _selftest(path, archive.read(SELFTEST_NAME))
            reference = json.loads(archive.read(REFERENCE_NAME)) if REFERENCE_NAME in names else None
            contract = parse_contract(archive.read(CONTRACT_NAME)) if CONTRACT_NAME in names else None
    except (zipfile.BadZipFile, KeyError, OSError, json.JSONDecodeError, ProtocolError) as exc:
        raise BundleError(f"{path.name}: not a readable bundle: {exc}") from exc
    return LoadedBundle(manifest, model_bytes, inputs, outputs, reference, weights, contract)


def _check_members(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_MEMBERS:
        raise BundleError(f"{path.name}: {len(infos)} members, at most {MAX_MEMBERS} allowed")
    total = 0
    for info in infos:
        name = info.filename
        if "/" in name or "\\" in name or name.startswith(".") or ".." in name:
            raise BundleError(f"{path.name}: unsafe member name {name!r}")
        total += info.file_size
    if total > MAX_UNCOMPRESSED_BYTES:
        raise BundleError(f"{path.name}: expands to {total} bytes, over the {MAX_UNCOMPRESSED_BYTES}-byte limit")
    if MANIFEST_NAME not in {i.filename for i in infos} or SELFTEST_NAME not in {i.filename for i in infos}:
        raise BundleError(f"{path.name}: missing {MANIFEST_NAME} or {SELFTEST_NAME}")


def _manifest(path: Path, raw: bytes) -> BundleManifest:
    try:
        return BundleManifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"{path.name}: invalid manifest: {where}: {first['msg']}") from exc


def _selftest(path: Path, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as vectors:
            return vectors["inputs"], vectors["outputs"]
    except (ValueError, KeyError, OSError) as exc:
        raise BundleError(f"{path.name}: unreadable {SELFTEST_NAME}: {exc}") from exc
