"""`.pt2` sources are used as saved: bounded dynamic dimensions reach every target that takes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.convert import convert
from converters.data import Dataset
from tests.converters.conftest import Trained

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

EVERY_TARGET = ["x86-onnx-cpu", "intel-openvino", "torchscript-cpu", "rpi4-arm64", "apple-coreml"]


def _save(module: torch.nn.Module, example: torch.Tensor, shapes: dict[int, object], path: Path) -> Path:
    program = torch.export.export(module, (example,), dynamic_shapes=(shapes,))
    torch.export.save(program, str(path))
    return path


def _check_every_target(report: object, targets: list[str] = EVERY_TARGET) -> None:
    built = {v.target for v in report.variants}  # type: ignore[attr-defined]
    assert built == set(targets)
    for variant in report.variants:  # type: ignore[attr-defined]
        if variant.target == "apple-coreml":
            assert variant.status == "not_executed" and variant.size_bytes > 0, variant
        else:
            assert variant.status == "ok" and variant.max_rel_error < 1e-3, (variant.name, variant.error)


def test_cnn_with_a_bounded_batch(cnn: Trained, tmp_path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    path = _save(cnn.model, cnn.example[0].repeat(2, 1, 1, 1), {0: batch}, tmp_path / "cnn.pt2")
    report = convert(path, EVERY_TARGET, tmp_path / "out", eval=cnn.eval, precisions=["fp32", "fp16"])
    _check_every_target(report)


def test_bert_encoder_with_bounded_batch_and_sequence(tmp_path: Path) -> None:
    import onnxruntime as ort

    from tests.converters.converter_models import TinyBert

    model = TinyBert().eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, TinyBert.vocab, size=(32, 16)).astype(np.int64)
    shapes = {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("seq", max=64)}
    path = _save(model, torch.from_numpy(ids[:2]), shapes, tmp_path / "bert.pt2")
    out = tmp_path / "out"
    # fp32 on every target that runs here (the CNN above covers Core ML and fp16 from a .pt2)
    targets = [t for t in EVERY_TARGET if t != "apple-coreml"]
    report = convert(path, targets, out, eval=Dataset({"input_ids": ids}), precisions=["fp32"])
    _check_every_target(report, targets)
    # the ONNX variant keeps the program's own symbolic batch and sequence
    session = ort.InferenceSession(str(report.artifact_path(report.variant("x86-onnx-cpu", "fp32"))))
    longer = rng.integers(0, TinyBert.vocab, size=(3, 40)).astype(np.int64)
    got = session.run(None, {session.get_inputs()[0].name: longer})[0]
    want = model(torch.from_numpy(longer)).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
