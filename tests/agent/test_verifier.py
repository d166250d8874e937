"""TUF verification of bundles: the signed bytes pass; tampered, unsigned, mislabelled and expired do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from agent.errors import VerificationError
from agent.verifier import BundleVerifier, MetadataSource
from hub.errors import NotFoundError
from tests.agent.conftest import MemoryHub, bundle_bytes


def _source(hub: MemoryHub) -> MetadataSource:
    def source(name: str) -> bytes | None:
        try:
            return hub.tuf.metadata_file(name)
        except NotFoundError:
            return None

    return source


def _verifier(hub: MemoryHub, tmp_path: Path) -> BundleVerifier:
    return BundleVerifier(tmp_path / "tuf", hub.tuf.trusted_root(), _source(hub))


def _bundle_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "bundle.zip"
    path.write_bytes(data)
    return path


def test_the_signed_bundle_passes_and_returns_its_signed_fields(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    custom = _verifier(memory_hub, tmp_path).verify(order, _bundle_file(tmp_path, bundle_bytes("1.0.0")))
    assert custom == {"model": "m", "version": "1.0.0", "target": order.target}


def test_tampered_bytes_are_refused(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    tampered = bytearray(bundle_bytes("1.0.0"))
    tampered[100] ^= 0xFF
    with pytest.raises(VerificationError, match="does not match its signed length and sha256"):
        _verifier(memory_hub, tmp_path).verify(order, _bundle_file(tmp_path, bytes(tampered)))


def test_a_bundle_the_hub_never_signed_is_refused(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0").model_copy(update={"tuf_target": "bundles/m/9.9.9/x.zip"})
    with pytest.raises(VerificationError, match="the hub has not signed this bundle"):
        _verifier(memory_hub, tmp_path).verify(order, _bundle_file(tmp_path, bundle_bytes("1.0.0")))


def test_signed_for_another_target_is_refused(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0").model_copy(update={"target": "rpi4-arm64"})
    with pytest.raises(VerificationError, match="signed target is 'x86-onnx-cpu'"):
        _verifier(memory_hub, tmp_path).verify(order, _bundle_file(tmp_path, bundle_bytes("1.0.0")))


def test_expired_metadata_is_refused(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    with (
        time_machine.travel(datetime.now(UTC) + timedelta(days=2)),
        pytest.raises(VerificationError, match="hub metadata has expired"),
    ):
        _verifier(memory_hub, tmp_path).verify(order, _bundle_file(tmp_path, bundle_bytes("1.0.0")))


def test_trusted_metadata_persists_so_a_restart_does_not_bootstrap_again(memory_hub: MemoryHub, tmp_path: Path) -> None:
    order = memory_hub.publish("1.0.0")
    bundle = _bundle_file(tmp_path, bundle_bytes("1.0.0"))
    _verifier(memory_hub, tmp_path).verify(order, bundle)
    restarted = BundleVerifier(tmp_path / "tuf", b"not a root: never read again", _source(memory_hub))
    assert restarted.verify(order, bundle)["version"] == "1.0.0"
