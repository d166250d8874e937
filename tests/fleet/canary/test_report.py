"""The canary report (fleet/canary/report.py)."""

from __future__ import annotations

import numpy as np

from fleet.canary import (
    CanaryReport,
    analyse_canary,
)
from tests.fleet.canary.device_groups import device_group


def test_report_is_json() -> None:
    rng = np.random.default_rng(34)
    report = analyse_canary(device_group(rng, "c", 6), device_group(rng, "b", 6))
    again = CanaryReport.model_validate_json(report.model_dump_json())
    assert again.verdict == report.verdict and len(again.metrics) == 6
