"""Open Inference Protocol (KServe V2) request and response bodies, JSON and binary-data framing.

A binary request carries the header ``Inference-Header-Content-Length: N``: its first N bytes are the
JSON request, the rest are the raw tensors in input order, each input naming its length in
``parameters.binary_data_size``. Responses use the same framing for outputs asked for in binary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from hub.serving.errors import InvalidInputError
from hub.serving.tensors import from_binary, from_json, to_binary, to_json_data, v2_datatype

HEADER_LENGTH = "Inference-Header-Content-Length"


class RequestInput(BaseModel):
    """One input tensor of an infer request."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestOutput(BaseModel):
    """One output the client asks for (all outputs when the request names none)."""

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    """The JSON part of an infer request."""

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None

    def timeout_s(self) -> float | None:
        """The request's own timeout (parameter ``timeout``, microseconds as in Triton), if any."""
        raw = self.parameters.get("timeout")
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
            raise InvalidInputError(f"parameter 'timeout' must be a positive number of microseconds: {raw!r}")
        return float(raw) / 1e6


def parse_request(body: bytes, header_length: int | None) -> tuple[InferRequest, dict[str, np.ndarray]]:
    """Parse an infer request body into its envelope and its input arrays."""
    if header_length is None:
        head, tail = body, memoryview(b"")
    else:
        if not 0 < header_length <= len(body):
            raise InvalidInputError(f"{HEADER_LENGTH} {header_length} outside the body ({len(body)} bytes)")
        head, tail = body[:header_length], memoryview(body)[header_length:]
    try:
        request = InferRequest.model_validate(json.loads(head))
    except ValidationError as exc:  # before ValueError: it is one
        raise InvalidInputError(f"request does not follow the V2 schema: {_first_error(exc)}") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidInputError(f"request is not valid JSON: {exc}") from exc
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in request.inputs:
        if item.name in arrays:
            raise InvalidInputError(f"input {item.name!r} given twice")
        size = item.parameters.get("binary_data_size")
        if size is None:
            arrays[item.name] = from_json(item.name, item.datatype, item.shape, item.data)
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(tail):
            raise InvalidInputError(f"input {item.name!r}: binary_data_size {size!r} exceeds the body")
        arrays[item.name] = from_binary(item.name, item.datatype, item.shape, tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise InvalidInputError(f"{len(tail) - offset} bytes of binary data belong to no input")
    return request, arrays


def requested_outputs(request: InferRequest, available: list[str]) -> list[tuple[str, bool]]:
    """The (name, as_binary) outputs to return, checked against the model's outputs."""
    default_binary = bool(request.parameters.get("binary_data_output", False))
    if request.outputs is None:
        return [(name, default_binary) for name in available]
    chosen: list[tuple[str, bool]] = []
    for out in request.outputs:
        if out.name not in available:
            raise InvalidInputError(f"unknown output {out.name!r}; the model has {available}")
        if "classification" in out.parameters:
            raise InvalidInputError("the classification extension is not supported")
        chosen.append((out.name, bool(out.parameters.get("binary_data", default_binary))))
    return chosen


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    chosen: list[tuple[str, bool]],
) -> tuple[bytes, int | None]:
    """Serialise a response; the second value is the JSON header length when binary data follows."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, as_binary in chosen:
        arr = outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr.dtype), "shape": list(arr.shape)}
        if as_binary:
            blob = to_binary(arr)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = to_json_data(arr)
        entries.append(entry)
    payload: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": entries}
    if request_id is not None:
        payload["id"] = request_id
    head = json.dumps(payload, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid"))
