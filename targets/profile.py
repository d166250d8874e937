"""The `Target` profile: what one class of hardware can run, as plain frozen data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Runtime = Literal["onnxruntime", "litert", "openvino", "coreml", "torchscript"]
Precision = Literal["fp32", "fp16", "int8", "int4", "palettized"]
Accelerator = Literal["cpu", "gpu", "npu", "igpu", "ane", "mcu"]


@dataclass(frozen=True, slots=True)
class Target:
    """One hardware class: the runtime it executes, precisions it supports and its budgets.

    ``precisions`` is ordered by preference: variant selection tries them in that order.
    ``heavy_param_limit`` is the largest model (in parameters) served on the device itself; larger
    models are offloaded to the cloud serving tier.
    """

    name: str
    runtime: Runtime
    precisions: tuple[Precision, ...]
    memory_mb: int
    accelerator: Accelerator = "cpu"
    latency_budget_ms: float = 100.0
    arch: str = "x86_64"
    description: str = ""
    execution_providers: tuple[str, ...] = ()
    int8_io: bool = False
    heavy_param_limit: int = 50_000_000
    tags: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """Return the profile as JSON-ready data."""
        data = asdict(self)
        for key in ("precisions", "execution_providers", "tags"):
            data[key] = list(data[key])
        return data

    def supports(self, precision: str) -> bool:
        """Whether this target can run a variant of ``precision``."""
        return precision in self.precisions
