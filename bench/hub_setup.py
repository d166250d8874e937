"""What the rollout and scale benchmarks put in a hub before they start: two versions of one model with random
bundles, and device rows inserted in bulk."""

from __future__ import annotations

import os
from typing import Any

from fleet.wire.messages import InstalledModel

TARGET = "x86-onnx-cpu"


def register_versions(hub: Any, bundle_bytes: int) -> tuple[InstalledModel, str]:
    """Register digits 1.0.0 (what devices run) and 2.0.0 (what is rolled out) with stored random bundles;
    return what devices run and the new bundle's sha256."""
    installed = None
    new_sha = ""
    for version in ("1.0.0", "2.0.0"):
        hub.registry.add_version("digits", version)
        bundle = os.urandom(bundle_bytes)
        sha = hub.store.put_bytes(bundle)
        hub.registry.add_variant(
            "digits",
            version,
            target=TARGET,
            runtime="onnxruntime",
            precision="fp32",
            artifact_sha256=sha,
            size_bytes=len(bundle),
            bundle_sha256=sha,
            bundle_size=len(bundle),
            tuf_target=f"digits/{version}/{TARGET}.bundle",
        )
        if version == "1.0.0":
            installed = InstalledModel(model="digits", version=version, sha256=sha, target=TARGET)
        else:
            new_sha = sha
    assert installed is not None
    return installed, new_sha


def provision(hub: Any, device_ids: list[str]) -> None:
    """Device rows in bulk, so the hub accepts their traffic; the benchmarks' brokers authenticate nobody, so no
    per-device credential hash (scrypt) is computed."""
    from hub.registry import Device

    with hub.db.session() as session:
        for i, device_id in enumerate(device_ids):
            session.add(Device(id=device_id, target=TARGET, labels={"site": f"s{i % 4}"}, credential_hash="bench"))
