"""A registered variant for registry tests: the rows a conversion would add, without converting."""

from __future__ import annotations

from hub.registry import Registry

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
