"""`Session`: what every variant of one conversion shares (source, data, reference outputs, cache, dirs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.cache import StepCache
from converters.data import Dataset
from converters.options import ConvertOptions
from converters.source import SourceModel


@dataclass
class Session:
    """One conversion in progress: read-only inputs plus the scratch and staging directories."""

    options: ConvertOptions
    source: SourceModel
    calibration: Dataset
    evaluation: Dataset
    train: Dataset | None
    reference: np.ndarray
    source_accuracy: float | None
    cache: StepCache
    scratch: Path
    staging: Path
    sources: dict[str, SourceModel] = field(default_factory=dict)  # source passes' results by key

    @property
    def budget(self) -> float | None:
        return self.options.max_accuracy_drop

    @property
    def threads(self) -> int:
        return self.options.threads

    def notify(self, event: str, name: str, detail: str) -> None:
        self.options.notify(event, name, detail)
