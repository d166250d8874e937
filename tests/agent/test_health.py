"""Health check: golden vectors within tolerance, a top-1 floor for quantised bundles, the latency budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import agent.health as health
from agent.bundle import read_bundle
from agent.errors import HealthCheckError
from agent.health import health_check
from agent.model import ServableModel
from fleet.wire.bundle import SelfTest
from hub.bundles.publish import build_bundle
from targets import TARGETS
from tests.agent.conftest import GOLDEN_X, GOLDEN_Y, MODEL_BYTES, TARGET, manifest


def _model(tmp_path: Path, golden_y: np.ndarray, selftest: SelfTest | None = None) -> ServableModel:
    m = manifest("1.0.0")
    if selftest is not None:
        m = m.model_copy(update={"selftest": selftest})
    path = tmp_path / "b.zip"
    path.write_bytes(build_bundle(m, MODEL_BYTES, GOLDEN_X, golden_y))
    return ServableModel(read_bundle(path), "ab" * 32)


def test_matching_outputs_pass_and_the_report_says_what_was_measured(tmp_path: Path) -> None:
    report = health_check(_model(tmp_path, GOLDEN_Y), latency_repeats=3)
    assert report.vectors == len(GOLDEN_X) and report.max_abs_error < 1e-5 and report.top1_agreement == 1.0
    assert report.latency_budget_ms == TARGETS[TARGET].latency_budget_ms and report.latency_ms_p50 > 0


def test_outputs_beyond_tolerance_fail(tmp_path: Path) -> None:
    with pytest.raises(HealthCheckError, match=r"self-test failed: max abs error .* top-1 agreement"):
        health_check(_model(tmp_path, GOLDEN_Y + 0.5), latency_repeats=1)


def test_a_quantised_bundle_passes_on_its_top1_floor_but_not_below_it(tmp_path: Path) -> None:
    shifted = GOLDEN_Y + 0.01  # off by more than atol, same argmax everywhere
    assert health_check(_model(tmp_path, shifted, SelfTest(min_top1_agreement=0.9)), latency_repeats=1)
    swapped = GOLDEN_Y[:, ::-1].copy()
    with pytest.raises(HealthCheckError, match="top-1 agreement"):
        health_check(_model(tmp_path, swapped, SelfTest(min_top1_agreement=0.9)), latency_repeats=1)


def test_a_wrong_output_shape_fails(tmp_path: Path) -> None:
    with pytest.raises(HealthCheckError, match=r"self-test output shape \[8, 3\] != expected \[8, 2\]"):
        health_check(_model(tmp_path, GOLDEN_Y[:, :2].copy()), latency_repeats=1)


def test_a_model_slower_than_the_targets_budget_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tight = dataclasses.replace(TARGETS[TARGET], latency_budget_ms=1e-9)
    monkeypatch.setattr(health, "TARGETS", {**TARGETS, TARGET: tight})
    with pytest.raises(HealthCheckError, match=rf"exceeds {TARGET}'s budget"):
        health_check(_model(tmp_path, GOLDEN_Y), latency_repeats=3)
