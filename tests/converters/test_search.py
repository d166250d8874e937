"""The quantization search: the transformer int8 schemes it tries and the variant it keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.convert import convert
from converters.data import Dataset
from converters.errors import PipelineConfigError
from converters.exporters.onnx import OnnxExporter
from converters.passes.transformer_fusion import TransformerOptimizePass
from converters.pipeline import parse_pipeline
from converters.plan import plan_variants
from converters.search import search_space
from converters.types import Artifact
from tests.converters.conftest import Trained
from tests.converters.converter_models import TinyBert

TARGETS = ["x86-onnx-cpu", "intel-openvino", "rpi4-arm64"]


def _candidates(target: str, *, transformer: bool, max_trials: int = 8) -> list[list[dict[str, Any]]]:
    (plan,) = plan_variants([target], precisions=["int8"], integer_inputs=transformer)
    assert plan.transformer is transformer
    return [p.to_config() for p in search_space(plan.pipeline, max_trials, transformer=plan.transformer)]


def _quant_steps(target: str, *, transformer: bool, max_trials: int = 8) -> list[dict[str, Any]]:
    return [config[-1] for config in _candidates(target, transformer=transformer, max_trials=max_trials)]


def test_transformer_search_space_holds_the_transformer_int8_schemes() -> None:
    candidates = _candidates("x86-onnx-cpu", transformer=True)
    # every ONNX Runtime candidate quantizes the fused graph
    assert all([s["type"] for s in c[:-1]] == ["onnx_export", "transformer_optimize"] for c in candidates)
    ort = [c[-1] for c in candidates]
    # first dynamic int8 of every operator the fused graph has: QAttention, MatMulInteger, embeddings
    assert ort[0] == {**ort[0], "type": "int8_dynamic", "op_types": (), "per_channel": False}
    assert {(s["type"], s["op_types"], s["per_channel"]) for s in ort[:5]} == {
        ("int8_dynamic", (), False),
        ("int8_dynamic", (), True),
        ("int8_dynamic", ("MatMul",), True),
        ("int8_static", ("MatMul",), True),
        ("int8_static", (), True),
    }
    openvino = _quant_steps("intel-openvino", transformer=True)
    assert openvino[0] == {**openvino[0], "type": "nncf_ptq", "transformer": True}
    assert openvino[1] == {**openvino[0], "transformer": False}
    litert = _quant_steps("rpi4-arm64", transformer=True)
    assert {s["mode"] for s in litert[:2]} == {"static", "dynamic_range"}


def test_fp32_gets_the_same_fusion_so_the_ratio_measures_quantization() -> None:
    def steps(target: str, precision: str, transformer: bool) -> list[str]:
        (plan,) = plan_variants([target], precisions=[precision], integer_inputs=transformer)
        return [step.type for step in plan.pipeline.steps]

    assert steps("x86-onnx-cpu", "fp32", True) == ["onnx_export", "transformer_optimize", "graph_optimize"]
    assert steps("x86-onnx-cpu", "fp32", False) == ["onnx_export", "graph_optimize"]
    assert steps("x86-onnx-cpu", "int8", False) == ["onnx_export", "int8_static"]
    assert steps("cloud-gpu", "fp16", True) == ["onnx_export", "fp16"]


def test_other_models_keep_their_scheme_and_tune_it() -> None:
    ort = _quant_steps("x86-onnx-cpu", transformer=False, max_trials=6)
    assert {s["type"] for s in ort} == {"int8_static"}
    assert all(s["op_types"] == () for s in ort)
    assert all(s["mode"] == "static" for s in _quant_steps("rpi4-arm64", transformer=False))
    # a full-integer MCU model has no dynamic-range alternative
    assert all(s["mode"] == "static" for s in _quant_steps("mcu-int8", transformer=True))


def test_dynamic_range_cannot_have_int8_io() -> None:
    with pytest.raises(PipelineConfigError, match="int8_io needs mode 'static'"):
        parse_pipeline([{"type": "litert_export"}, {"type": "litert_int8", "mode": "dynamic_range", "int8_io": True}])


def test_tiny_encoder_int8_search_keeps_the_fastest_within_budget_and_exports_once(
    encoder: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"onnx_export": 0, "transformer_optimize": 0}
    real_export, real_fuse = OnnxExporter.export, TransformerOptimizePass.run

    def export(self: OnnxExporter, *args: Any) -> Artifact:
        calls["onnx_export"] += 1
        return real_export(self, *args)

    def fuse(self: TransformerOptimizePass, *args: Any) -> Artifact:
        calls["transformer_optimize"] += 1
        return real_fuse(self, *args)

    monkeypatch.setattr(OnnxExporter, "export", export)
    monkeypatch.setattr(TransformerOptimizePass, "run", fuse)
    report = convert(  # no cache_dir: the trials still share one export and one fused graph
        encoder.model,
        ["x86-onnx-cpu"],
        tmp_path / "out",
        example_inputs=encoder.example,
        input_names=("input_ids",),
        calib=encoder.calib,
        eval=encoder.eval,
        precisions=["int8"],
        max_accuracy_drop=0.02,
        max_trials=6,
        measure_budget_s=0.3,
    )
    variant = report.variant("x86-onnx-cpu", "int8")
    assert variant.status == "ok" and variant.within_budget is True
    assert variant.accuracy_drop is not None and variant.accuracy_drop <= 0.02
    search = variant.search
    assert search is not None and search.chosen is not None
    tried = [t.pipeline[-1] for t in search.trials]
    assert tried[0]["type"] == "int8_dynamic" and list(tried[0]["op_types"]) == []
    assert len(tried) == 5  # every scheme; no tunings once one fits
    assert [t.error for t in search.trials] == [None] * 5  # each scheme builds on the fused graph
    assert calls == {"onnx_export": 1, "transformer_optimize": 1}
    assert variant.meta["fusion"]["fused_ops"].get("SkipLayerNormalization", 0) >= 1
    fitting = [t for t in search.trials if t.within_budget]
    timed = [t.latency_ms_p50 for t in fitting]
    assert len(fitting) == 1 or all(latency is not None for latency in timed)
    chosen = search.trials[search.chosen]
    assert chosen.within_budget and chosen.pipeline == variant.pipeline
    if len(fitting) > 1:
        assert chosen.latency_ms_p50 == min(latency for latency in timed if latency is not None)


def test_litert_dynamic_range_builds_a_checked_variant(encoder: Trained, tmp_path: Path, shared_cache: Path) -> None:
    report = convert(
        encoder.model,
        ["rpi4-arm64"],
        tmp_path / "out",
        example_inputs=encoder.example,
        input_names=("input_ids",),
        calib=encoder.calib,
        eval=encoder.eval,
        pipelines={"rpi4-arm64": [{"type": "litert_export"}, {"type": "litert_int8", "mode": "dynamic_range"}]},
        cache_dir=shared_cache,
    )
    variant = report.variant("rpi4-arm64", "int8")
    assert variant.status == "ok" and variant.executed
    assert variant.pipeline[-1]["mode"] == "dynamic_range"
    assert variant.top1_agreement is not None and variant.top1_agreement >= 0.95
    assert variant.size_bytes is not None


def test_bert_encoder_is_fused_then_quantized_to_qattention_within_budget(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import onnx
    import torch

    rng = np.random.default_rng(0)
    ids = rng.integers(0, TinyBert.vocab, size=(96, 16)).astype(np.int64)
    report = convert(
        TinyBert(),
        ["x86-onnx-cpu"],
        tmp_path / "out",
        example_inputs=(torch.from_numpy(ids[:1]),),
        input_names=("input_ids",),
        calib=Dataset({"input_ids": ids[:32]}),
        eval=Dataset({"input_ids": ids[32:]}),
        precisions=["int8"],
        max_accuracy_drop=0.05,
        max_trials=1,  # the default scheme only: dynamic int8 of the fused graph
        measure_budget_s=0.2,
    )
    variant = report.variant("x86-onnx-cpu", "int8")
    fusion = variant.meta["fusion"]
    assert (fusion["num_heads"], fusion["hidden_size"]) == (2, 64)  # from the transformers config
    assert fusion["fused_ops"]["Attention"] == 2  # one per layer
    graph = onnx.load(str(report.artifact_path(variant)), load_external_data=False).graph
    assert sum(node.op_type == "QAttention" for node in graph.node) == 2
    assert variant.status == "ok" and variant.within_budget is True, variant.reason
