"""V2 (Open Inference Protocol) tensors <-> numpy: datatype names, JSON ``data`` and the binary tensor
data extension (raw little-endian bytes; ``BYTES`` elements as 4-byte length + bytes)."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from hub.serving.errors import InvalidInputError

_NUMERIC: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_BY_KIND: dict[str, str] = {dt.str.lstrip("<>|="): name for name, dt in _NUMERIC.items()}
DATATYPES: tuple[str, ...] = (*_NUMERIC, "BYTES")


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a V2 datatype name (``BYTES`` maps to ``object``)."""
    if datatype == "BYTES":
        return np.dtype(object)
    try:
        return _NUMERIC[datatype]
    except KeyError:
        raise InvalidInputError(f"unsupported datatype {datatype!r}; expected one of {DATATYPES}") from None


def v2_datatype(dtype: np.dtype[Any]) -> str:
    """The V2 datatype name of a numpy dtype."""
    if dtype.kind in "OSU":
        return "BYTES"
    name = _BY_KIND.get(dtype.str.lstrip("<>|="))
    if name is None:
        raise InvalidInputError(f"numpy dtype {dtype} has no V2 datatype")
    return name


def _element_count(shape: Sequence[int]) -> int:
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def from_json(name: str, datatype: str, shape: Sequence[int], data: Any) -> np.ndarray:
    """Decode a JSON tensor (``data`` nested or flat, row-major) into an array of ``shape``."""
    dtype = numpy_dtype(datatype)
    count = _element_count(shape)
    if data is None:
        raise InvalidInputError(f"input {name!r} has no data")
    try:
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=object).reshape(-1)
            arr = np.array([_to_bytes(v) for v in flat], dtype=object)
        else:
            arr = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInputError(f"input {name!r}: data does not fit {datatype}: {exc}") from exc
    if arr.size != count:
        raise InvalidInputError(f"input {name!r}: shape {list(shape)} needs {count} elements, data has {arr.size}")
    return arr.reshape(tuple(shape))


def from_binary(name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview) -> np.ndarray:
    """Decode a tensor sent with the binary data extension."""
    count = _element_count(shape)
    if datatype == "BYTES":
        items = _split_bytes(name, bytes(raw))
        if len(items) != count:
            raise InvalidInputError(f"input {name!r}: shape needs {count} elements, got {len(items)}")
        return np.array(items, dtype=object).reshape(tuple(shape))
    dtype = numpy_dtype(datatype).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise InvalidInputError(
            f"input {name!r}: {datatype}{list(shape)} needs {count * dtype.itemsize} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def to_json_data(arr: np.ndarray) -> list[Any]:
    """Flat row-major JSON data of an output tensor."""
    if arr.dtype.kind in "OSU":
        return [_to_text(v) for v in arr.reshape(-1)]
    return arr.reshape(-1).tolist()


def to_binary(arr: np.ndarray) -> bytes:
    """Raw bytes of an output tensor for the binary data extension."""
    if arr.dtype.kind in "OSU":
        out = bytearray()
        for v in arr.reshape(-1):
            b = _to_bytes(v)
            out += struct.pack("<I", len(b)) + b
        return bytes(out)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise InvalidInputError(f"BYTES element must be a string, got {type(value).__name__}")


def _to_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _split_bytes(name: str, raw: bytes) -> list[bytes]:
    items: list[bytes] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InvalidInputError(f"input {name!r}: truncated BYTES length prefix")
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > len(raw):
            raise InvalidInputError(f"input {name!r}: truncated BYTES element")
        items.append(raw[pos : pos + length])
        pos += length
    return items
