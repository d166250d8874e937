"""The shapes every step shares: `Artifact`, `StepContext`, and one Protocol per extension point."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from converters.data import Dataset
    from converters.pipeline import Format
    from converters.source import SourceModel
    from targets import Target


@dataclass(frozen=True)
class Artifact:
    """One model file (or directory, e.g. ``.mlpackage``) a step produced.

    ``files`` lists every path (relative to ``root``) that makes up the variant; ``meta`` is
    JSON-ready: input/output names and dtypes, int8 I/O quantization parameters, notes.
    """

    root: Path
    main: str
    format: Format
    precision: str
    files: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The file (or directory) a runtime loads."""
        return self.root / self.main


@dataclass(frozen=True)
class StepContext:
    """What a step may use besides its own config: the target, the data, the source model."""

    target: Target
    source: SourceModel
    calibration: Dataset
    train: Dataset | None = None
    fused: tuple[Any, ...] = ()  # artifact passes the exporter applies while exporting (LiteRT int8)
    threads: int = 2


class Exporter(Protocol):
    """Writes a source model in one runtime's format into ``out`` (an empty directory)."""

    def export(self, model: SourceModel, target: Target, out: Path) -> Artifact: ...


class Pass(Protocol):
    """Turns one exported artifact into another, written into ``out`` (an empty directory)."""

    def run(self, artifact: Artifact, out: Path) -> Artifact: ...


class SourcePass(Protocol):
    """Changes the PyTorch source model before export (pruning, distillation)."""

    def apply(self, model: SourceModel) -> SourceModel: ...


class Runner(Protocol):
    """A loaded variant: maps a batch of named inputs to the primary output."""

    def __call__(self, inputs: Mapping[str, Any]) -> Any: ...


class Evaluator(Protocol):
    """Checks a variant against the source on validation data."""

    def evaluate(self, runner: Runner, reference: Any, data: Dataset) -> Mapping[str, Any]: ...
