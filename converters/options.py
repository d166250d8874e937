"""`ConvertOptions`: everything `convert` takes besides the model, the targets and the output directory."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from converters.data import Dataset
from converters.errors import PipelineConfigError

Progress = Callable[[str, str, str], None]  # (event, variant name, detail)
DataArg = Dataset | Path | str | None


@dataclass(frozen=True, kw_only=True)
class ConvertOptions:
    """Options for one conversion, grouped by what they steer.

    Source (for an ``nn.Module``): ``example_inputs``, ``input_names``, ``output_names``,
    ``dynamic_axes``, ``name``. Data: ``calib``, ``eval``, ``train`` (`Dataset` or ``.npz`` path) and
    ``eval_limit``. Plan: ``precisions``, ``pipelines``. Search: ``max_accuracy_drop``,
    ``max_trials``. Run: ``cache_dir``, ``strict``, ``keep_going``, ``threads``,
    ``measure_budget_s``, ``progress``.
    """

    # source
    example_inputs: tuple[Any, ...] | None = None
    input_names: Sequence[str] | None = None
    output_names: Sequence[str] = ("output",)
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None
    name: str | None = None
    # data
    calib: DataArg = None
    eval: DataArg = None
    train: DataArg = None
    eval_limit: int = 256
    # plan
    precisions: Sequence[str] | None = None
    pipelines: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
    # search
    max_accuracy_drop: float | None = None
    max_trials: int = 6
    # run
    cache_dir: Path | None = None
    strict: bool = False
    keep_going: bool = False
    threads: int = 2
    measure_budget_s: float = 1.0
    progress: Progress | None = None

    def __post_init__(self) -> None:
        if self.max_accuracy_drop is not None and not 0 <= self.max_accuracy_drop < 1:
            raise PipelineConfigError("max_accuracy_drop is a fraction of accuracy in [0, 1)")
        if self.threads < 1 or self.max_trials < 1 or self.eval_limit < 1:
            raise PipelineConfigError("threads, max_trials and eval_limit must be at least 1")
        if self.strict and self.keep_going:
            raise PipelineConfigError("strict and keep_going contradict each other; pass one")

    @classmethod
    def build(cls, options: ConvertOptions | None, overrides: Mapping[str, Any]) -> ConvertOptions:
        """``options`` (or the defaults) with ``overrides`` applied; unknown names are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"convert() got unknown option(s): {', '.join(unknown)}")
        base = {f.name: getattr(options, f.name) for f in fields(cls)} if options else {}
        return cls(**{**base, **overrides})

    def notify(self, event: str, name: str, detail: str) -> None:
        """Send a progress event to the ``progress`` callback, if any."""
        if self.progress is not None:
            self.progress(event, name, detail)
