"""Target registry: profiles are data, lookup errors list the known names."""

from __future__ import annotations

import dataclasses

import pytest

from targets import TARGETS, UnknownTargetError, get_target


def test_every_profile_is_frozen_and_consistent() -> None:
    for name, target in TARGETS.items():
        assert target.name == name
        assert target.precisions and target.memory_mb > 0 and target.latency_budget_ms > 0
        with pytest.raises(dataclasses.FrozenInstanceError):
            target.memory_mb = 1  # type: ignore[misc]


def test_required_hardware_classes_exist() -> None:
    runtimes = {t.runtime for t in TARGETS.values()}
    assert {"onnxruntime", "litert", "openvino", "coreml", "torchscript"} <= runtimes
    assert get_target("mcu-int8").int8_io and get_target("mcu-int8").precisions == ("int8",)


def test_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(UnknownTargetError, match=r"unknown target 'toaster'; known targets: .*rpi4-arm64"):
        get_target("toaster")
