"""The quality gate on conversion reports: thresholds per variant and target, production comparison, JUnit."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import pytest

from converters.errors import ConversionError
from converters.gate import GateThresholds, evaluate_gate
from converters.report import ConversionReport, DataInfo, VariantReport


def report(*variants: VariantReport, source_accuracy: float = 0.95) -> ConversionReport:
    data = DataInfo(origin="eval.npz", samples=100, labels=True)
    return ConversionReport(
        model="digits", source={}, created_at="2026-12-01T00:00:00Z", host={}, toolchains={},
        max_accuracy_drop=0.02, evaluation=data, calibration=data, source_accuracy=source_accuracy,
        variants=list(variants),
    )  # fmt: skip


def variant(target: str, precision: str = "fp32", **fields: object) -> VariantReport:
    values: dict[str, object] = {"accuracy": 0.95, "latency_ms_p50": 1.0, "size_bytes": 2_000_000, "status": "ok"}
    values.update(fields)
    return VariantReport(target=target, runtime="onnxruntime", precision=precision, executed=True, **values)


def test_every_threshold_is_checked_per_variant() -> None:
    thresholds = GateThresholds(min_accuracy=0.9, max_accuracy_drop=0.02, max_latency_ms=5.0, max_size_mb=3.0)
    good = evaluate_gate(report(variant("x86-onnx-cpu"), variant("rpi4-arm64", "int8", accuracy=0.94)), thresholds)
    assert good.passed and len(good.checks) == 8
    slow = variant("rpi4-arm64", "int8", accuracy=0.90, latency_ms_p50=9.0, size_bytes=4_000_000)
    bad = evaluate_gate(report(variant("x86-onnx-cpu"), slow), thresholds)
    assert not bad.passed
    assert {(c.subject, c.check) for c in bad.failures()} == {
        ("rpi4-arm64/int8", "accuracy drop vs source"),
        ("rpi4-arm64/int8", "latency p50 ms"),
        ("rpi4-arm64/int8", "size MB"),
    }


def test_per_target_budgets_override_the_global_ones_and_missing_values_fail() -> None:
    thresholds = GateThresholds(max_latency_ms=2.0, latency_ms={"rpi4-arm64": 20.0})
    result = evaluate_gate(
        report(variant("rpi4-arm64", latency_ms_p50=10.0), variant("x86-onnx-cpu", latency_ms_p50=None)), thresholds
    )
    assert [(c.subject, c.passed) for c in result.checks] == [("rpi4-arm64/fp32", True), ("x86-onnx-cpu/fp32", False)]


def test_required_targets_and_an_empty_conversion_fail() -> None:
    thresholds = GateThresholds(required_targets=["x86-onnx-cpu", "intel-openvino"])
    failed_build = variant("intel-openvino", status="failed")
    result = evaluate_gate(report(variant("x86-onnx-cpu"), failed_build), thresholds)
    assert [(c.subject, c.passed) for c in result.failures()] == [("intel-openvino", False)]
    assert not evaluate_gate(report(failed_build), GateThresholds()).passed


def test_drop_against_production_uses_the_same_target_and_precision() -> None:
    production = report(variant("x86-onnx-cpu", accuracy=0.97), variant("x86-onnx-cpu", "int8", accuracy=0.96))
    candidate = report(variant("x86-onnx-cpu", "int8", accuracy=0.93))
    thresholds = GateThresholds(max_drop_vs_production=0.02)
    result = evaluate_gate(candidate, thresholds, production=production)
    (check,) = result.checks
    assert not result.passed and check.value == pytest.approx(0.03)
    assert evaluate_gate(candidate, GateThresholds(max_drop_vs_production=0.05), production=production).passed


def test_junit_xml_has_a_case_per_check_and_a_failure_per_failed_check() -> None:
    result = evaluate_gate(
        report(variant("x86-onnx-cpu", accuracy=0.5)), GateThresholds(min_accuracy=0.9, max_size_mb=10)
    )
    suite = ElementTree.fromstring(result.junit_xml()).find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    failures = [case for case in suite.iter("testcase") if case.find("failure") is not None]
    assert [case.get("name") for case in failures] == ["accuracy"]
    assert "0.5" in (failures[0].find("failure").get("message") or "")  # type: ignore[union-attr]


def test_thresholds_load_from_toml_and_flags_override(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(
        '[gate]\nmin_accuracy = 0.8\nrequired_targets = ["x86-onnx-cpu"]\n[gate.latency_ms]\nrpi4-arm64 = 30\n'
    )
    loaded = GateThresholds.load(path, min_accuracy=0.9, max_size_mb=None)
    assert loaded.min_accuracy == 0.9 and loaded.required_targets == ["x86-onnx-cpu"]
    assert loaded.latency_ms == {"rpi4-arm64": 30.0} and loaded.max_size_mb is None
    path.write_text("[gate]\nmin_accuracy = 1.5\n")
    with pytest.raises(ConversionError, match="min_accuracy"):
        GateThresholds.load(path)
    path.write_text("[gate\n")
    with pytest.raises(ConversionError, match="cannot read gate thresholds"):
        GateThresholds.load(path)
