"""The data contract on the device: live inputs checked against the active bundle's ``contract.json``.

Violations are counted per rule into telemetry; with ``refuse`` a request breaking any rule is refused
(the local API answers 400) instead of answered.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.errors import InferenceError
from fleet.wire.contract import ContractCheck, DataContract, check_input


class ContractViolationError(InferenceError):
    """A request broke the model's data contract and the agent refuses such requests."""


def check_request(contract: DataContract, inputs: Any) -> ContractCheck | None:
    """Check one request's raw inputs (one row or a batch) against the contract's first input; None when the
    inputs are not a numeric array at all (the model's own input check answers those)."""
    spec = contract.input()
    try:
        batch = np.asarray(inputs)
    except (ValueError, TypeError):
        return None
    if batch.dtype.kind not in "biuf":
        return None
    if batch.ndim == len(spec.shape):
        batch = batch[None, ...]
    return check_input(spec, batch)


def refusal(result: ContractCheck) -> ContractViolationError:
    """The error a refused request gets: which rules it broke."""
    broken = ", ".join(f"{rule} ({count} rows)" for rule, count in sorted(result.violations.items()))
    return ContractViolationError(f"input breaks the model's data contract: {broken}")
