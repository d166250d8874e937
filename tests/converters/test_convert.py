"""convert(): variants checked against the source, measured, cached, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converters import ConversionError, UnsupportedOperatorError
from converters.convert import convert
from converters.data import Dataset
from converters.report import REPORT_FILE, load_report, tree_sha256
from tests.converters.conftest import Trained
from tests.converters.converter_models import mystery_model

torch = pytest.importorskip("torch")

REQUIRED_FIELDS = {
    "target",
    "runtime",
    "precision",
    "path",
    "sha256",
    "size_bytes",
    "max_abs_error",
    "top1_agreement",
    "accuracy",
    "latency_ms_p50",
    "latency_ms_p99",
    "executed",
    "within_budget",
}


def _convert(trained: Trained, targets: list[str], out: Path, **kwargs: object):
    return convert(
        trained.model, targets, out, example_inputs=trained.example, calib=trained.calib, eval=trained.eval, **kwargs
    )


def test_cnn_onnx_int8_and_fp32_are_checked_measured_and_reported(
    cnn: Trained, tmp_path: Path, shared_cache: Path
) -> None:
    out = tmp_path / "out"
    report = _convert(cnn, ["x86-onnx-cpu", "torchscript-cpu"], out, cache_dir=shared_cache)
    by_name = {v.name: v for v in report.variants}
    assert set(by_name) == {"x86-onnx-cpu/int8", "x86-onnx-cpu/fp32", "torchscript-cpu/fp32"}
    int8, fp32 = by_name["x86-onnx-cpu/int8"], by_name["x86-onnx-cpu/fp32"]
    assert report.source_accuracy is not None and report.source_accuracy > 0.8
    for variant in report.variants:
        assert variant.executed and variant.within_budget and variant.status == "ok"
        assert variant.latency_ms_p50 is not None and variant.latency_ms_p99 >= variant.latency_ms_p50 > 0
        assert tree_sha256(out / variant.path) == variant.sha256
        assert (out / variant.path).stat().st_size <= variant.size_bytes
    assert fp32.max_abs_error < 1e-4 and fp32.top1_agreement == 1.0
    assert int8.precision == "int8" and int8.size_bytes < 0.6 * fp32.size_bytes
    assert report.source_accuracy - int8.accuracy <= 0.01 + 1e-9  # within one accuracy point
    assert int8.meta["quantization"] == "static_qdq"
    # report.json is the source of truth, with the fields; the model card is rendered from it
    raw = json.loads((out / REPORT_FILE).read_text())
    assert all(set(v) >= REQUIRED_FIELDS for v in raw["variants"])
    card = (out / "MODEL_CARD.md").read_text()
    assert "x86-onnx-cpu" in card and "| int8 |" in card
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial or work directories left


def test_int8_variant_output_matches_source_within_tolerance(mlp: Trained, tmp_path: Path, shared_cache: Path) -> None:
    import onnxruntime as ort

    report = _convert(mlp, ["x86-onnx-cpu"], tmp_path / "out", precisions=["int8"], cache_dir=shared_cache)
    variant = report.variant("x86-onnx-cpu", "int8")
    session = ort.InferenceSession(str(report.artifact_path(variant)), providers=["CPUExecutionProvider"])
    x = mlp.eval.inputs["input"]
    got = session.run(None, {"input": x})[0]
    want = mlp.model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(got - want).max() == pytest.approx(variant.max_abs_error, rel=1e-4)
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.97


def test_unsupported_operator_names_op_target_stage_and_leaves_no_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UnsupportedOperatorError) as info:
        convert(mystery_model(), ["x86-onnx-cpu"], out, example_inputs=(torch.randn(1, 4),))
    assert "mystery" in info.value.operator
    assert (info.value.target, info.value.stage) == ("x86-onnx-cpu", "export")
    assert "mystery" in str(info.value) and "x86-onnx-cpu" in str(info.value)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_the_previous_output_intact(cnn: Trained, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("previous")
    with pytest.raises(ConversionError):
        convert(mystery_model(), ["x86-onnx-cpu"], out, example_inputs=(torch.randn(1, 4),))
    assert (out / "report.json").read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failing_target_is_reported_while_the_others_are_built(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = convert(
        mystery_model(),
        ["x86-onnx-cpu", "torchscript-cpu"],
        out,
        precisions=["fp32"],
        example_inputs=(torch.randn(1, 4),),
    )
    failed = report.variant("x86-onnx-cpu", "fp32")
    assert failed.status == "failed" and failed.path is None and not failed.executed
    assert failed.error is not None and "mystery" in (failed.error.operator or "")
    assert failed.error.stage == "export" and "mystery" in (failed.reason or "")
    assert report.variant("torchscript-cpu").status == "ok"  # TorchScript runs the custom op eagerly
    assert not (out / "x86-onnx-cpu-fp32").exists()
    assert "mystery" in (out / "MODEL_CARD.md").read_text()


def test_strict_stops_at_the_first_failure_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOperatorError):
        convert(
            mystery_model(),
            ["x86-onnx-cpu", "torchscript-cpu"],
            tmp_path / "out",
            precisions=["fp32"],
            example_inputs=(torch.randn(1, 4),),
            strict=True,
        )
    assert list(tmp_path.iterdir()) == []


def test_keep_going_writes_the_report_even_when_nothing_was_built(tmp_path: Path) -> None:
    report = convert(
        mystery_model(), ["x86-onnx-cpu"], tmp_path / "out", example_inputs=(torch.randn(1, 4),), keep_going=True
    )
    assert {v.status for v in report.variants} == {"failed"}
    assert (tmp_path / "out" / REPORT_FILE).is_file()


def test_rerun_with_one_changed_target_redoes_only_that_target(mlp: Trained, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _convert(mlp, ["x86-onnx-cpu", "torchscript-cpu"], tmp_path / "a", cache_dir=cache, precisions=["fp32"])
    assert all(not step.cached for v in first.variants for step in v.steps)
    second = _convert(mlp, ["x86-onnx-cpu", "intel-openvino"], tmp_path / "b", cache_dir=cache, precisions=["fp32"])
    onnx_steps = second.variant("x86-onnx-cpu", "fp32").steps
    openvino_steps = second.variant("intel-openvino", "fp32").steps
    assert [s.cached for s in onnx_steps] == [True, True]
    assert [s.cached for s in openvino_steps] == [False]
    assert second.variant("x86-onnx-cpu").sha256 == first.variant("x86-onnx-cpu").sha256
    # a changed pass config is a cache miss for that pass only; the export is reused
    third = _convert(
        mlp,
        ["x86-onnx-cpu"],
        tmp_path / "c",
        cache_dir=cache,
        precisions=["fp32"],
        pipelines={"x86-onnx-cpu": [{"type": "onnx_export"}, {"type": "graph_optimize", "level": "basic"}]},
    )
    assert [s.cached for s in third.variant("x86-onnx-cpu").steps] == [True, False]


def test_budget_search_reports_closest_miss_and_saves_it(tmp_path: Path) -> None:
    from tests.converters.converter_models import TinyCNN

    torch.manual_seed(3)
    model = TinyCNN().eval()  # untrained: near-tied logits, so int8 flips some top-1 decisions
    rng = np.random.default_rng(0)
    data = Dataset({"input": rng.standard_normal((64, 1, 8, 8)).astype(np.float32)})
    out = tmp_path / "out"
    report = convert(
        model,
        ["x86-onnx-cpu"],
        out,
        precisions=["int8"],
        example_inputs=(torch.randn(1, 1, 8, 8),),
        calib=data,
        eval=data,
        max_accuracy_drop=0.0,
        max_trials=3,
    )
    variant = report.variant("x86-onnx-cpu", "int8")
    assert variant.search is not None and len(variant.search.trials) == 3
    losses = [t.quality_loss for t in variant.search.trials]
    assert all(loss is not None and loss > 0 for loss in losses)
    assert variant.status == "out_of_budget" and variant.within_budget is False
    assert variant.search.chosen is None
    assert variant.search.trials[variant.search.closest_miss].quality_loss == min(losses)
    assert (out / variant.path).is_file()  # the closest miss is kept on disk
    assert variant.pipeline == variant.search.trials[variant.search.closest_miss].pipeline


def test_budget_search_keeps_best_within_budget(cnn: Trained, tmp_path: Path, shared_cache: Path) -> None:
    report = _convert(
        cnn,
        ["x86-onnx-cpu"],
        tmp_path / "out",
        precisions=["int8"],
        max_accuracy_drop=0.02,
        max_trials=3,
        cache_dir=shared_cache,
    )
    variant = report.variant("x86-onnx-cpu", "int8")
    assert variant.within_budget is True and variant.status == "ok"
    assert variant.search is not None and variant.search.chosen is not None
    chosen = variant.search.trials[variant.search.chosen]
    assert chosen.within_budget and chosen.quality_loss == min(
        t.quality_loss for t in variant.search.trials if t.quality_loss is not None
    )
    assert variant.accuracy_drop is not None and variant.accuracy_drop <= 0.02


def test_load_report_verifies_files(mlp: Trained, tmp_path: Path, shared_cache: Path) -> None:
    out = tmp_path / "out"
    _convert(mlp, ["x86-onnx-cpu"], out, precisions=["fp32"], cache_dir=shared_cache)
    report = load_report(out)
    variant = report.variant("x86-onnx-cpu")
    assert report.artifact_path(variant).is_file()
    report.artifact_path(variant).write_bytes(b"tampered")
    with pytest.raises(ConversionError, match="sha256"):
        load_report(out)
    with pytest.raises(ConversionError, match=r"no report\.json"):
        load_report(tmp_path)
