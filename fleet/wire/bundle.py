"""The bundle manifest: what a device needs to load, check and serve a model, shared by hub and agent.

A bundle is a zip archive with fixed member names: ``manifest.json``, the model file it names,
``selftest.npz`` (golden inputs and outputs, loaded without pickle) and optionally ``reference.json``
(per-feature reference quantiles for drift sketches) and ``contract.json`` (the data contract of the inputs,
`fleet.wire.contract`). Readers open members by name only; they never
extract paths taken from the archive.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

BUNDLE_FORMAT: Final = "edgefleet-bundle/1"
MANIFEST_NAME: Final = "manifest.json"
SELFTEST_NAME: Final = "selftest.npz"
REFERENCE_NAME: Final = "reference.json"
CONTRACT_NAME: Final = "contract.json"
MEMBER_NAME = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class Preprocess(BaseModel):
    """Input transform applied on the device before the model, identical to training."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["none", "affine"] = "none"
    # affine: x' = (x * scale - mean) / std, per feature or broadcast scalars
    scale: float = 1.0
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])


class Postprocess(BaseModel):
    """How raw outputs become an answer: class labels and whether to apply softmax to logits."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["classification", "raw"] = "classification"
    softmax: bool = True
    labels: list[str] = Field(default_factory=list)


class SelfTest(BaseModel):
    """Golden vectors (in ``selftest.npz`` as ``inputs`` and ``outputs``) and the tolerance to meet."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    atol: float = Field(default=1e-4, ge=0)
    rtol: float = Field(default=1e-3, ge=0)
    min_top1_agreement: float = Field(default=1.0, ge=0, le=1)


class TensorSpec(BaseModel):
    """Name, dtype and shape of the model input (``-1`` for dynamic dimensions)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    dtype: Literal["float32", "float16", "int8", "uint8", "int32", "int64"] = "float32"
    shape: list[int]


class BundleManifest(BaseModel):
    """Everything about one bundle except the bytes; signed indirectly through its TUF target hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    format: Literal["edgefleet-bundle/1"] = BUNDLE_FORMAT
    model: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
    target: str
    runtime: Literal["onnxruntime", "litert", "openvino", "coreml", "torchscript"]
    precision: str = "fp32"
    model_file: MEMBER_NAME
    weights_file: MEMBER_NAME | None = None  # OpenVINO IR keeps its weights beside the .xml
    input: TensorSpec
    preprocess: Preprocess = Field(default_factory=Preprocess)
    postprocess: Postprocess = Field(default_factory=Postprocess)
    selftest: SelfTest = Field(default_factory=SelfTest)
    heavy: bool = False
    feature_names: list[str] = Field(default_factory=list)
    created_at: float = 0.0
