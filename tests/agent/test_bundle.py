"""Bundle archives: unsafe names, pickled arrays, missing members and bad manifests are refused."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agent.bundle import read_bundle
from agent.errors import BundleError
from fleet.wire.bundle import BundleManifest, TensorSpec
from fleet.wire.contract import infer
from hub.bundles.publish import build_bundle
from hub.errors import InvalidRequestError

MANIFEST = BundleManifest(
    model="m",
    version="1.0.0",
    target="x86-onnx-cpu",
    runtime="onnxruntime",
    model_file="model.onnx",
    input=TensorSpec(name="input", shape=[-1, 2]),
)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _vectors(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def test_round_trip_and_determinism(tmp_path: Path) -> None:
    x, y = np.ones((2, 2), np.float32), np.zeros((2, 3), np.float32)
    data = build_bundle(MANIFEST, b"model-bytes", x, y)
    assert data == build_bundle(MANIFEST, b"model-bytes", x, y)
    path = tmp_path / "b.zip"
    path.write_bytes(data)
    bundle = read_bundle(path)
    assert bundle.manifest == MANIFEST and bundle.model_bytes == b"model-bytes"
    np.testing.assert_array_equal(bundle.selftest_inputs, x)


@pytest.mark.parametrize("name", ["../evil.onnx", "/etc/passwd", "dir/model.onnx", ".hidden"])
def test_path_traversal_names_are_refused(tmp_path: Path, name: str) -> None:
    members = {
        "manifest.json": MANIFEST.model_dump_json().encode(),
        "selftest.npz": _vectors(inputs=np.ones((1, 2)), outputs=np.ones((1, 2))),
        name: b"x",
    }
    with pytest.raises(BundleError, match="unsafe member name"):
        read_bundle(_zip(tmp_path / "b.zip", members))


def test_pickled_self_test_vectors_are_refused(tmp_path: Path) -> None:
    members = {
        "manifest.json": MANIFEST.model_dump_json().encode(),
        "model.onnx": b"m",
        "selftest.npz": _vectors(inputs=np.array([{"a": 1}], dtype=object), outputs=np.ones((1, 2))),
    }
    with pytest.raises(BundleError, match=r"unreadable selftest\.npz"):
        read_bundle(_zip(tmp_path / "b.zip", members))


def test_missing_model_file_and_bad_manifest_are_named(tmp_path: Path) -> None:
    vectors = _vectors(inputs=np.ones((1, 2)), outputs=np.ones((1, 2)))
    with pytest.raises(BundleError, match=r"model file 'model\.onnx', not in the archive"):
        read_bundle(
            _zip(tmp_path / "a.zip", {"manifest.json": MANIFEST.model_dump_json().encode(), "selftest.npz": vectors})
        )
    with pytest.raises(BundleError, match="invalid manifest: runtime"):
        read_bundle(
            _zip(
                tmp_path / "b.zip",
                {
                    "manifest.json": MANIFEST.model_dump_json().replace("onnxruntime", "tensorflow").encode(),
                    "selftest.npz": vectors,
                    "model.onnx": b"m",
                },
            )
        )


def test_a_bundle_carries_its_data_contract_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    x, y = np.ones((2, 2), np.float32), np.zeros((2, 3), np.float32)
    contract = infer({"input": x})
    path = tmp_path / "b.zip"
    path.write_bytes(build_bundle(MANIFEST, b"m", x, y, contract=contract))
    assert read_bundle(path).contract == contract
    members = {
        "manifest.json": MANIFEST.model_dump_json().encode(),
        "model.onnx": b"m",
        "selftest.npz": _vectors(inputs=x, outputs=y),
        "contract.json": b'{"inputs": []}',
    }
    with pytest.raises(BundleError, match="invalid contract: inputs"):
        read_bundle(_zip(tmp_path / "c.zip", members))


def test_corrupt_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.zip"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(BundleError, match="not a readable bundle"):
        read_bundle(path)


def test_openvino_ir_weights_travel_beside_the_model(tmp_path: Path) -> None:
    manifest = MANIFEST.model_copy(
        update={"runtime": "openvino", "model_file": "model.xml", "weights_file": "model.bin"}
    )
    x, y = np.ones((1, 2), np.float32), np.ones((1, 2), np.float32)
    path = tmp_path / "b.zip"
    path.write_bytes(build_bundle(manifest, b"<xml/>", x, y, weights=b"\x00\x01"))
    bundle = read_bundle(path)
    assert (bundle.model_bytes, bundle.weights) == (b"<xml/>", b"\x00\x01")
    with pytest.raises(InvalidRequestError, match="go together"):
        build_bundle(manifest, b"<xml/>", x, y)
