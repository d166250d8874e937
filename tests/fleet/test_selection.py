"""Variant selection and label selectors."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.errors import FleetConfigError
from fleet.selection import (
    RejectCode,
    SelectionPolicy,
    Variant,
    parse_selector,
    select_variant,
    selector_labels,
)
from targets import get_target

MB = 1024 * 1024


def variant(vid: str, target: str, precision: str, size_mb: float = 1.0, **extra: Any) -> Variant:
    return Variant(variant_id=vid, target=target, precision=precision, size_bytes=int(size_mb * MB), **extra)


VARIANTS = [
    variant("x86-fp32", "x86-onnx-cpu", "fp32", 4, latency_ms=12.0),
    variant("x86-int8", "x86-onnx-cpu", "int8", 1, latency_ms=8.0),
    variant("rpi-int8", "rpi4-arm64", "int8", 1, latency_ms=90.0),
    variant("rpi-fp32", "rpi4-arm64", "fp32", 4, latency_ms=140.0),
    variant("jetson-fp16", "jetson-orin", "fp16", 2, latency_ms=3.0),
]


def test_prefers_the_targets_precision_order() -> None:
    chosen = select_variant("x86-onnx-cpu", VARIANTS)
    assert chosen.ok and chosen.variant is not None
    assert chosen.variant.variant_id == "x86-int8"  # int8 comes first for x86-onnx-cpu
    assert select_variant(get_target("jetson-orin"), VARIANTS).variant.variant_id == "jetson-fp16"  # type: ignore[union-attr]


def test_never_hands_out_another_targets_variant() -> None:
    result = select_variant("apple-coreml", VARIANTS)
    assert not result.ok
    assert result.code == RejectCode.NO_VARIANT_FOR_TARGET
    assert "apple-coreml" in result.reason and "x86-onnx-cpu" in result.reason


def test_falls_back_to_next_precision_when_preferred_is_over_latency_budget() -> None:
    variants = [
        variant("rpi-int8", "rpi4-arm64", "int8", 1, latency_ms=400.0),  # budget is 150 ms
        variant("rpi-fp32", "rpi4-arm64", "fp32", 4, latency_ms=120.0),
    ]
    result = select_variant("rpi4-arm64", variants)
    assert result.variant is not None and result.variant.variant_id == "rpi-fp32"
    assert [(r.variant_id, r.code) for r in result.rejected] == [("rpi-int8", RejectCode.LATENCY)]


def test_memory_budget_uses_measurement_then_estimate() -> None:
    mcu = get_target("mcu-int8")  # 1 MiB of memory
    small = variant("tiny", "mcu-int8", "int8", size_mb=0.2)
    assert select_variant(mcu, [small]).ok  # 0.2 MiB * 1.5 = 0.3 MiB <= 0.8 MiB
    too_big = variant("big", "mcu-int8", "int8", size_mb=0.6)  # 0.9 MiB estimated
    result = select_variant(mcu, [too_big])
    assert not result.ok and result.code == RejectCode.MEMORY and "estimated" in result.reason
    measured = variant("measured", "mcu-int8", "int8", size_mb=0.6, peak_memory_mb=0.7)
    assert select_variant(mcu, [measured]).ok  # the measurement wins over the estimate
    assert not select_variant(mcu, [measured], SelectionPolicy(memory_fraction=0.5)).ok


def test_unsupported_precision_and_heavy_models_are_rejected_with_reasons() -> None:
    variants = [
        variant("mcu-fp32", "mcu-int8", "fp32", 0.1),
        variant("mcu-huge", "mcu-int8", "int8", 0.1, param_count=10_000_000),
    ]
    result = select_variant("mcu-int8", variants)
    assert not result.ok
    codes = {r.variant_id: r.code for r in result.rejected}
    assert codes == {"mcu-fp32": RejectCode.PRECISION_UNSUPPORTED, "mcu-huge": RejectCode.HEAVY}
    assert "cloud" in result.reason


def test_unmeasured_latency_is_accepted_unless_policy_requires_it() -> None:
    unmeasured = [variant("x86-int8", "x86-onnx-cpu", "int8")]
    assert select_variant("x86-onnx-cpu", unmeasured).ok
    strict = select_variant("x86-onnx-cpu", unmeasured, SelectionPolicy(require_measured_latency=True))
    assert strict.code == RejectCode.LATENCY_UNMEASURED


def test_ties_break_by_latency_then_size() -> None:
    variants = [
        variant("a", "x86-onnx-cpu", "int8", 2, latency_ms=9.0),
        variant("b", "x86-onnx-cpu", "int8", 3, latency_ms=5.0),
        variant("c", "x86-onnx-cpu", "int8", 1),
    ]
    assert select_variant("x86-onnx-cpu", variants).variant.variant_id == "b"  # type: ignore[union-attr]


def test_unknown_target_is_a_reason_not_an_exception() -> None:
    result = select_variant("toaster-9000", VARIANTS)
    assert not result.ok and result.code == RejectCode.UNKNOWN_TARGET and "toaster-9000" in result.reason


# ---------------------------------------------------------------------------------------- selectors

LABELS = {
    "cam-1": {"env": "prod", "region": "us", "tier": "edge"},
    "cam-2": {"env": "prod", "region": "eu", "tier": "gateway", "retired": "yes"},
    "cam-3": {"env": "dev", "region": "us"},
    "cam-4": {"env": "prod", "region": "ap", "tier": "edge"},
}


def pick(text: str) -> list[str]:
    selector = parse_selector(text)
    return sorted(device_id for device_id, labels in LABELS.items() if selector.matches(labels))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["cam-1", "cam-2", "cam-3", "cam-4"]),
        ("env=prod", ["cam-1", "cam-2", "cam-4"]),
        ("env==prod", ["cam-1", "cam-2", "cam-4"]),
        ("env=prod,region!=eu", ["cam-1", "cam-4"]),
        ("tier!=edge", ["cam-2", "cam-3"]),  # != matches devices without the label
        ("region in (us, ap)", ["cam-1", "cam-3", "cam-4"]),
        ("region in (us,ap),env=prod", ["cam-1", "cam-4"]),
        ("tier notin (edge)", ["cam-2", "cam-3"]),
        ("tier", ["cam-1", "cam-2", "cam-4"]),
        ("!retired", ["cam-1", "cam-3", "cam-4"]),
        ("env=prod, tier in (edge,gateway), !retired", ["cam-1", "cam-4"]),
    ],
)
def test_selector_semantics(text: str, expected: list[str]) -> None:
    assert pick(text) == expected


def test_selector_round_trips_through_its_canonical_text() -> None:
    parsed = parse_selector("env = prod , region in (us,ap,us), !retired")
    assert str(parsed) == "env=prod,region in (ap,us),!retired"
    assert parse_selector(str(parsed)) == parsed


@pytest.mark.parametrize("bad", ["env=prod,", "env in (a,b", "env in ()", "=prod", "env=pr od", "a in ((b))"])
def test_bad_selectors_raise_config_errors(bad: str) -> None:
    with pytest.raises(FleetConfigError):
        parse_selector(bad)


def test_selector_sees_the_target_as_a_label() -> None:
    labels = selector_labels({"env": "prod"}, "rpi4-arm64")
    assert parse_selector("target=rpi4-arm64,env=prod").matches(labels)
    assert selector_labels({"target": "custom"}, "rpi4-arm64")["target"] == "custom"
