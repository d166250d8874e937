"""export_onnx: one self-contained file, symbolic batch (and extra axes), errors as ours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from converters import ConversionError, UnsupportedOperatorError, export_onnx  # noqa: E402
from tests.converters.converter_models import TinyCNN, TinyEncoder, mystery_model  # noqa: E402


def test_cnn_export_is_self_contained_with_dynamic_batch(tmp_path: Path) -> None:
    model = TinyCNN().eval()
    path = export_onnx(model, (torch.randn(1, 1, 8, 8),), tmp_path / "cnn.onnx")
    assert path == tmp_path / "cnn.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx"]  # no external data, no temp files
    loaded = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in loaded.graph.initializer)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    batch = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    got = session.run(None, {"input": batch})[0]
    want = model(torch.from_numpy(batch)).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_encoder_export_keeps_int64_ids_and_dynamic_seq(tmp_path: Path) -> None:
    model = TinyEncoder().eval()
    ids = torch.randint(0, model.vocab, (1, 7))
    path = export_onnx(
        model,
        (ids,),
        tmp_path / "enc.onnx",
        input_names=("input_ids",),
        dynamic_axes={"input_ids": {1: "seq"}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(int64)"
    assert session.get_inputs()[0].shape == ["batch", "seq"]
    other = np.random.default_rng(1).integers(0, model.vocab, (3, 13)).astype(np.int64)
    got = session.run(None, {"input_ids": other})[0]
    np.testing.assert_allclose(got, model(torch.from_numpy(other)).detach().numpy(), atol=1e-4)


def test_unsupported_operator_names_op_target_stage_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "m.onnx"
    with pytest.raises(UnsupportedOperatorError) as info:
        export_onnx(mystery_model(), (torch.randn(1, 4),), out, target="x86-onnx-cpu")
    assert "mystery" in info.value.operator
    assert info.value.target == "x86-onnx-cpu"
    assert info.value.stage == "export"
    assert isinstance(info.value.__cause__, Exception)
    assert list(out.parent.iterdir()) == []


def test_mismatched_input_names_is_a_conversion_error(tmp_path: Path) -> None:
    with pytest.raises(ConversionError):
        export_onnx(TinyCNN(), (torch.randn(1, 1, 8, 8),), tmp_path / "x.onnx", input_names=("a", "b"))
