"""``POST /models/{name}/versions/{version}/variants``: the hub signs and registers an uploaded variant, and refuses
a malformed or mismatched upload in one line, registering nothing."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fleet.wire.bundle import BundleManifest, TensorSpec
from hub.api import create_app
from hub.app import Hub
from hub.auth import Role
from hub.bundles.conversions import PreparedVariant
from hub.bundles.reference import reference_profile
from hub.bundles.upload import METRICS_NAME, pack_upload
from hub.config import HubSettings
from tests.hub.auth.clients import api_client


def _variant(tmp_path: Path, version: str = "1.0.0", **metrics: object) -> PreparedVariant:
    manifest = BundleManifest(
        model="tiny", version=version, target="x86-onnx-cpu", runtime="onnxruntime", model_file="m.onnx",
        input=TensorSpec(name="input", shape=[-1, 4]),
    )  # fmt: skip
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model bytes: the hub stores and signs them, it never runs them")
    inputs = np.ones((2, 4), np.float32)
    outputs = np.ones((2, 3), np.float32)
    reference = reference_profile(manifest, inputs, outputs)
    return PreparedVariant("x86-onnx-cpu/fp32", manifest, model, None, inputs, outputs, reference, dict(metrics))


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    return Hub(HubSettings(data_dir=tmp_path / "hub"))


def test_an_upload_is_signed_and_registered(hub: Hub, tmp_path: Path) -> None:
    body = pack_upload(_variant(tmp_path, accuracy=0.9, latency_ms_p50=None), None)
    answer = api_client(hub, Role.OPERATOR).post("/models/tiny/versions/1.0.0/variants", content=body)
    assert answer.status_code == 201, answer.text
    (variant,) = hub.registry.list_variants("tiny", "1.0.0")
    assert variant.bundle_sha256 == answer.json()["bundle_sha256"]
    assert variant.metrics == {"accuracy": 0.9, "latency_ms_p50": None}
    with zipfile.ZipFile(hub.store.path(variant.bundle_sha256)) as bundle:
        assert METRICS_NAME not in bundle.namelist()  # the hub rebuilt the bundle from its parts


def _with_member(archive: bytes, name: str, data: bytes) -> bytes:
    out = io.BytesIO(archive)
    with zipfile.ZipFile(out, "a") as zipped:
        zipped.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (lambda v: b"not a zip", "not a bundle upload"),
        (lambda v: pack_upload(v, None)[:-40], "not a bundle upload"),
        (lambda v: _with_member(pack_upload(v, None), "../evil", b""), "unsafe member name"),
        (lambda v: pack_upload(PreparedVariant(**{**vars(v), "metrics": {"accuracy": "high"}}), None), "accuracy"),
    ],
    ids=["not a zip", "truncated", "unsafe member", "metric not a number"],
)
def test_a_bad_upload_is_refused_in_one_line(hub: Hub, tmp_path: Path, make: object, detail: str) -> None:
    body = make(_variant(tmp_path))  # type: ignore[operator]
    answer = api_client(hub, Role.OPERATOR).post("/models/tiny/versions/1.0.0/variants", content=body)
    assert answer.status_code == 422 and detail in answer.json()["detail"], answer.text
    assert hub.registry.list_versions("tiny") == []


def test_an_upload_for_another_version_or_by_a_viewer_is_refused(hub: Hub, tmp_path: Path) -> None:
    body = pack_upload(_variant(tmp_path, version="2.0.0"), None)
    app = create_app(hub)
    mismatch = api_client(hub, Role.OPERATOR, app=app).post("/models/tiny/versions/1.0.0/variants", content=body)
    assert mismatch.status_code == 422 and "tiny:2.0.0, not tiny:1.0.0" in mismatch.json()["detail"]
    viewer = api_client(hub, Role.VIEWER, app=app).post("/models/tiny/versions/2.0.0/variants", content=body)
    assert viewer.status_code == 403 and hub.registry.list_versions("tiny") == []
