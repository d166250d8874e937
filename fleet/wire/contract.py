"""Data contracts: what a model's inputs must look like, inferred from calibration data, checked everywhere.

A contract names each input tensor with its dtype, per-row shape (``-1`` for a dynamic dimension), value range
(one for the whole tensor, optionally one per flattened feature), allowed categories (for integer-coded inputs)
and whether NaN may appear. It travels as ``contract.json`` in the bundle, so the same checks run at conversion
(calibration and evaluation data), on the device (live inputs) and in tests.

Checks are plain vectorised numpy over a whole batch: a handful of reductions per rule, no per-row objects,
so the agent's hot path stays cheap. Each rule counts the rows that break it; rule names are
``{input}.{shape|dtype|nan|range|category}``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet.errors import ProtocolError

CONTRACT_FORMAT: Final = "edgefleet-contract/1"
#: Integer-coded inputs with at most this many distinct values get an allowed-categories rule.
MAX_CATEGORIES: Final = 32
Dtype = Literal["float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool"]


class InputContract(BaseModel):
    """The rules for one input tensor; ``None`` leaves a rule out."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1, max_length=100)  # rule names (name.rule) fit telemetry labels
    dtype: Dtype = "float32"
    shape: list[int] = Field(description="per-row shape, without the batch dimension; -1 is dynamic")
    min: float | None = None
    max: float | None = None
    feature_min: list[float] | None = Field(default=None, description="per flattened feature, overrides min")
    feature_max: list[float] | None = Field(default=None, description="per flattened feature, overrides max")
    categories: list[float] | None = Field(default=None, description="the only values allowed")
    allow_nan: bool = False


class DataContract(BaseModel):
    """The contract of one model's inputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    format: Literal["edgefleet-contract/1"] = CONTRACT_FORMAT
    model: str | None = None
    inputs: list[InputContract] = Field(min_length=1)

    def input(self, name: str | None = None) -> InputContract:
        """The contract of input ``name`` (the first input when None)."""
        if name is None:
            return self.inputs[0]
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise ProtocolError(f"the contract has no input {name!r}")


class ContractCheck(BaseModel):
    """Rows checked and rows breaking each rule (rules with no violation are left out)."""

    model_config = ConfigDict(extra="forbid")
    rows: int = 0
    violations: dict[str, int] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether no row broke any rule."""
        return not self.violations

    def merge(self, other: ContractCheck) -> None:
        """Add ``other``'s counts to this one."""
        self.rows += other.rows
        for rule, count in other.violations.items():
            self.violations[rule] = self.violations.get(rule, 0) + count


def check_input(spec: InputContract, values: np.ndarray) -> ContractCheck:
    """Check a batch (first dimension = rows) of one input against ``spec``; vectorised, never raises."""
    batch = np.asarray(values)
    rows = int(batch.shape[0]) if batch.ndim > 0 else 1
    result = ContractCheck(rows=rows)
    expected = spec.shape
    if batch.ndim != len(expected) + 1 or any(
        e not in (-1, g) for e, g in zip(expected, batch.shape[1:], strict=False)
    ):
        result.violations[f"{spec.name}.shape"] = rows
        return result  # nothing else is meaningful on the wrong shape
    if rows == 0:
        return result
    flat = batch.reshape(rows, -1)
    if flat.dtype.kind not in "biuf":
        result.violations[f"{spec.name}.dtype"] = rows
        return result
    data = flat.astype(np.float64, copy=False)
    nan = np.isnan(data)
    counts: dict[str, np.ndarray] = {}
    if not spec.allow_nan:
        counts["nan"] = np.asarray(nan.any(axis=1))
    if spec.dtype not in ("float32", "float16", "float64"):
        info = np.iinfo(spec.dtype) if spec.dtype != "bool" else None
        lo, hi = (info.min, info.max) if info is not None else (0, 1)
        with np.errstate(invalid="ignore"):
            bad = (data != np.round(data)) | (data < lo) | (data > hi)
        counts["dtype"] = np.asarray((bad & ~nan).any(axis=1))
    low = _bound(spec.feature_min, spec.min, data.shape[1])
    high = _bound(spec.feature_max, spec.max, data.shape[1])
    if low is not None or high is not None:
        with np.errstate(invalid="ignore"):
            out = np.zeros(nan.shape, dtype=bool)
            if low is not None:
                out |= np.asarray(data < low)
            if high is not None:
                out |= np.asarray(data > high)
        counts["range"] = np.asarray(out.any(axis=1))
    if spec.categories is not None:
        allowed = np.isin(data, np.asarray(spec.categories, dtype=np.float64))
        counts["category"] = np.asarray((~allowed & ~nan).any(axis=1))
    for rule, row_flags in counts.items():
        broken = int(np.count_nonzero(row_flags))
        if broken:
            result.violations[f"{spec.name}.{rule}"] = broken
    return result


def _bound(per_feature: list[float] | None, scalar: float | None, width: int) -> np.ndarray | float | None:
    if per_feature is not None and len(per_feature) == width:
        return np.asarray(per_feature, dtype=np.float64)
    return scalar


def check(contract: DataContract, inputs: Mapping[str, np.ndarray]) -> ContractCheck:
    """Check every input the contract names; a missing input breaks its shape rule for every row."""
    total = ContractCheck()
    rows = max((len(np.asarray(v)) for v in inputs.values() if np.ndim(v) > 0), default=0)
    for spec in contract.inputs:
        if spec.name in inputs:
            single = check_input(spec, np.asarray(inputs[spec.name]))
        else:
            single = ContractCheck(rows=rows, violations={f"{spec.name}.shape": rows} if rows else {})
        total.merge(single)
    total.rows = rows
    return total


def infer(arrays: Mapping[str, np.ndarray], *, model: str | None = None, per_feature: bool = False) -> DataContract:
    """A contract every row of ``arrays`` (calibration data) satisfies: observed dtypes, shapes, ranges,
    NaN presence and, for integer inputs with few distinct values, the categories seen."""
    specs = []
    for name, values in arrays.items():
        batch = np.asarray(values)
        if batch.ndim == 0 or batch.shape[0] == 0:
            raise ProtocolError(f"input {name!r} has no rows to infer a contract from")
        if batch.dtype.kind not in "biuf":
            raise ProtocolError(f"input {name!r} has dtype {batch.dtype}; contracts cover numeric tensors")
        flat = batch.reshape(batch.shape[0], -1).astype(np.float64)
        has_values = not np.isnan(flat).all()
        categories = None
        if batch.dtype.kind in "biu":
            distinct = np.unique(flat)
            if len(distinct) <= MAX_CATEGORIES:
                categories = [float(v) for v in distinct]
        with np.errstate(all="ignore"):
            column_min = np.nanmin(flat, axis=0) if has_values else None
            column_max = np.nanmax(flat, axis=0) if has_values else None
        specs.append(
            InputContract(
                name=name,
                dtype=_dtype(batch.dtype),
                shape=list(batch.shape[1:]),
                min=float(np.nanmin(flat)) if has_values else None,
                max=float(np.nanmax(flat)) if has_values else None,
                feature_min=[float(v) for v in column_min] if per_feature and column_min is not None else None,
                feature_max=[float(v) for v in column_max] if per_feature and column_max is not None else None,
                categories=categories,
                allow_nan=bool(np.isnan(flat).any()),
            )
        )
    if not specs:
        raise ProtocolError("no input arrays to infer a contract from")
    return DataContract(model=model, inputs=specs)


def _dtype(dtype: np.dtype[Any]) -> Dtype:
    name = str(dtype)
    return cast(Dtype, name) if name in get_args(Dtype) else "float32"


def load_contract(path: Path) -> DataContract:
    """Read a contract from JSON, or TOML when the file ends in ``.toml``; `ProtocolError` says what is wrong."""
    try:
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        return DataContract.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ProtocolError(
            f"invalid contract {path}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ProtocolError(f"invalid contract {path}: {exc}") from exc


def parse_contract(raw: bytes | str) -> DataContract:
    """A contract from its JSON text (as carried in a bundle)."""
    try:
        return DataContract.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ProtocolError(f"invalid contract: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc
