"""V2 request/response framing and tensor codecs (JSON and the binary data extension)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from hub.serving import InvalidInputError
from hub.serving.protocol import encode_response, parse_request, requested_outputs
from hub.serving.tensors import from_binary, from_json, numpy_dtype, to_binary, to_json_data, v2_datatype

X0 = {"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}


@pytest.mark.parametrize("datatype", ["BOOL", "UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64"])
def test_numeric_tensors_round_trip_through_json_and_binary(datatype: str) -> None:
    arr = (np.arange(6) % 2 == 0) if datatype == "BOOL" else np.arange(6).astype(numpy_dtype(datatype))
    arr = arr.reshape(2, 3)
    assert v2_datatype(arr.dtype) == datatype
    np.testing.assert_array_equal(from_json("t", datatype, [2, 3], to_json_data(arr)), arr)
    np.testing.assert_array_equal(from_binary("t", datatype, [2, 3], to_binary(arr)), arr)


def test_json_data_may_be_nested_or_flat() -> None:
    nested = from_json("x", "FP32", [2, 2], [[1, 2], [3, 4]])
    flat = from_json("x", "FP32", [2, 2], [1, 2, 3, 4])
    np.testing.assert_array_equal(nested, flat)
    assert nested.dtype == np.float32


def test_bytes_tensors_use_length_prefixed_binary() -> None:
    arr = np.array([b"ab", b"", "\u00e9".encode()], dtype=object)
    raw = to_binary(arr)
    assert raw[:6] == struct.pack("<I", 2) + b"ab"
    assert list(from_binary("s", "BYTES", [3], raw)) == list(arr)
    assert list(from_json("s", "BYTES", [3], ["ab", "", "\u00e9"])) == list(arr)


@pytest.mark.parametrize(
    ("datatype", "shape", "data"),
    [
        ("FP32", [2, 2], [1, 2, 3]),  # too few elements
        ("FP32", [2], ["a", "b"]),  # not numbers
        ("FP31", [1], [1]),  # unknown datatype
        ("FP32", [-1], [1]),  # negative dim
        ("FP32", [1], None),  # no data
    ],
)
def test_bad_json_tensors_are_invalid_input(datatype: str, shape: list[int], data: object) -> None:
    with pytest.raises(InvalidInputError):
        from_json("x", datatype, shape, data)


def test_binary_tensor_of_wrong_size_is_invalid() -> None:
    with pytest.raises(InvalidInputError, match="needs 16 bytes"):
        from_binary("x", "FP32", [4], b"\0" * 12)


def _binary_request(arr: np.ndarray, extra: bytes = b"") -> tuple[bytes, int]:
    head = json.dumps(
        {
            "id": "r1",
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": list(arr.shape),
                    "parameters": {"binary_data_size": arr.nbytes},
                },
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return head + arr.tobytes() + extra, len(head)


def test_binary_request_is_parsed_by_header_length() -> None:
    arr = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, length = _binary_request(arr)
    request, arrays = parse_request(body, length)
    assert request.id == "r1"
    np.testing.assert_array_equal(arrays["x"], arr)
    assert requested_outputs(request, ["y", "z"]) == [("y", True)]


def test_binary_bytes_that_belong_to_no_input_are_rejected() -> None:
    body, length = _binary_request(np.zeros((1, 4), np.float32), extra=b"junk")
    with pytest.raises(InvalidInputError, match="belong to no input"):
        parse_request(body, length)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"inputs": []}',
        b'{"inputs": [{"name": "x"}]}',
        b"[1, 2]",
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},'
        b' {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}',
    ],
)
def test_malformed_requests_are_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_request(body, None)


def test_timeout_parameter_is_in_microseconds() -> None:
    body = {"parameters": {"timeout": 250000}, "inputs": [X0]}
    request, _ = parse_request(json.dumps(body).encode(), None)
    assert request.timeout_s() == pytest.approx(0.25)


def test_unknown_requested_output_is_invalid() -> None:
    request, _ = parse_request(json.dumps({"inputs": [X0], "outputs": [{"name": "q"}]}).encode(), None)
    with pytest.raises(InvalidInputError, match="unknown output"):
        requested_outputs(request, ["y"])


def test_response_mixes_json_and_binary_outputs() -> None:
    y = np.arange(4, dtype=np.float32).reshape(2, 2)
    z = np.array([1, 2], dtype=np.int64)
    body, length = encode_response("m", "3", "r9", {"y": y, "z": z}, [("y", True), ("z", False)])
    assert length is not None
    head = json.loads(body[:length])
    assert head["model_name"] == "m" and head["model_version"] == "3" and head["id"] == "r9"
    y_meta, z_meta = head["outputs"]
    assert y_meta == {
        "name": "y",
        "datatype": "FP32",
        "shape": [2, 2],
        "parameters": {"binary_data_size": 16},
    }
    assert z_meta == {"name": "z", "datatype": "INT64", "shape": [2], "data": [1, 2]}
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32).reshape(2, 2), y)


def test_json_only_response_has_no_header_length() -> None:
    body, length = encode_response("m", "1", None, {"y": np.ones(2, np.float32)}, [("y", False)])
    assert length is None
    assert json.loads(body)["outputs"][0]["data"] == [1.0, 1.0]
