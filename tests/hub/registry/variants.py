"""A registered variant for registry tests: the rows a conversion would add, without converting."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from hub.registry import Registry

if TYPE_CHECKING:
    from hub.app import Hub

SHA = "a" * 64


def add_variant(registry: Registry, version: str, target: str = "x86-onnx-cpu") -> None:
    """Register ``m:version``'s variant for ``target`` (the version must exist)."""
    registry.add_variant(
        "m",
        version,
        target=target,
        runtime="onnxruntime",
        precision="fp32",
        artifact_sha256=SHA,
        size_bytes=10,
        bundle_sha256=SHA,
        bundle_size=20,
        tuf_target=f"bundles/m/{version}/{target}.zip",
    )


def add_stored_version(hub: Hub, version: str, target: str = "x86-onnx-cpu") -> str:
    """Register ``digits:version`` with one variant for ``target`` whose small bundle (1,200 bytes) is in the
    hub's store; return the bundle's digest."""
    bundle = f"bundle {version}".encode() * 100
    sha = hub.store.put_bytes(bundle)
    hub.registry.add_version("digits", version)
    hub.registry.add_variant(
        "digits",
        version,
        target=target,
        runtime="onnxruntime",
        precision="fp32",
        artifact_sha256=hashlib.sha256(bundle).hexdigest(),
        size_bytes=len(bundle),
        bundle_sha256=sha,
        bundle_size=len(bundle),
        tuf_target=f"digits/{version}/{target}",
    )
    return sha
