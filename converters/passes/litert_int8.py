"""Full-integer int8 for LiteRT. LiteRT quantizes while converting, so ``litert_export`` applies this
step (PT2E static quantization calibrated on the calibration data); running it alone is an error."""

from __future__ import annotations

from pathlib import Path

from converters.errors import PipelineConfigError
from converters.pipeline import LiteRTInt8Step
from converters.types import Artifact, StepContext


class LiteRTInt8Pass:
    """``litert_int8``: fused into ``litert_export``; see `converters.exporters.litert`."""

    fused_into_export = True

    def __init__(self, config: LiteRTInt8Step, context: StepContext) -> None:
        self.config = config
        self.context = context

    def run(self, artifact: Artifact, out: Path) -> Artifact:
        raise PipelineConfigError("litert_int8 is applied by litert_export and cannot run on a .tflite file")
