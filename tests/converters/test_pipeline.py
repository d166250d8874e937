"""Pipeline config validation and the step registry."""

from __future__ import annotations

import pytest

from converters import registry
from converters.errors import MissingExtraError, PipelineConfigError
from converters.pipeline import parse_pipeline
from converters.plan import default_pipeline
from converters.search import search_space
from targets import TARGETS, get_target


def test_design_example_parses_and_round_trips() -> None:
    pipeline = parse_pipeline([{"type": "onnx_export", "opset": 18}, {"type": "int8_static", "calibration": "entropy"}])
    assert pipeline.format == "onnx"
    assert [s.type for s in pipeline.steps] == ["onnx_export", "int8_static"]
    assert parse_pipeline(pipeline.to_config()) == pipeline


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"type": "int8_static"}], "exactly one export"),
        ([{"type": "onnx_export"}, {"type": "openvino_export"}], "exactly one export"),
        ([{"type": "int8_static"}, {"type": "onnx_export"}], "after the export"),
        ([{"type": "onnx_export"}, {"type": "prune"}], "before the export"),
        ([{"type": "litert_export"}, {"type": "int8_static"}], "not tflite"),
        ([{"type": "onnx_export"}, {"type": "nncf_ptq"}], "not onnx"),
        ([{"type": "onnx_export", "opset": 7}], "invalid pipeline"),
        ([{"type": "onnx_export"}, {"type": "int8_static", "calibration": "magic"}], "invalid pipeline"),
        ([{"type": "no_such_step"}], "invalid pipeline"),
        ([{"type": "onnx_export", "bogus": 1}], "invalid pipeline"),
        ([{"type": "onnx_export", "kind": "source"}], "fixed by the step type"),
    ],
)
def test_invalid_pipelines_are_refused(steps: list[dict], message: str) -> None:
    with pytest.raises(PipelineConfigError, match=message):
        parse_pipeline(steps)


def test_every_target_precision_has_a_default_pipeline_whose_steps_are_registered() -> None:
    for target in TARGETS.values():
        for precision in target.precisions:
            pipeline = default_pipeline(target, precision)
            assert all(step.type in registry.STEPS for step in pipeline.steps)


def test_mcu_int8_pipeline_asks_for_int8_io() -> None:
    steps = default_pipeline(get_target("mcu-int8"), "int8").to_config()
    assert steps[-1] == {**steps[-1], "type": "litert_int8", "int8_io": True}


def test_search_space_starts_with_the_given_pipeline_and_varies_quantization() -> None:
    base = default_pipeline(get_target("x86-onnx-cpu"), "int8")
    candidates = search_space(base, max_trials=6)
    assert candidates[0] == base
    assert len(candidates) == 6
    configs = [c.to_config()[-1] for c in candidates]
    assert {c["calibration"] for c in configs} == {"minmax", "entropy", "percentile"}
    assert len({str(c) for c in configs}) == 6
    assert search_space(default_pipeline(get_target("x86-onnx-cpu"), "fp32"), 6) == [
        default_pipeline(get_target("x86-onnx-cpu"), "fp32")
    ]


def test_missing_extra_is_refused_before_import(monkeypatch: pytest.MonkeyPatch) -> None:
    imported: list[str] = []
    monkeypatch.setattr(registry, "module_available", lambda name: name != "openvino")
    monkeypatch.setattr(registry.importlib, "import_module", lambda name: imported.append(name))
    with pytest.raises(MissingExtraError) as info:
        registry.load_step("openvino_export")
    assert info.value.module == "openvino"
    assert "pip install edgefleet[convert]" in str(info.value)
    assert imported == []


def test_unknown_step_type_in_registry() -> None:
    with pytest.raises(PipelineConfigError, match="unknown step type"):
        registry.load_step("teleport")
