"""The local HTTP API against malformed requests, over raw sockets to the real server: every refusal is a 4xx
status line followed by a closed connection within a bound, never a reset or a hang; answers are strict JSON."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bundle import LoadedBundle
from agent.http_api import ApiLimits, LocalApi
from agent.inference import InferenceService
from agent.model import ServableModel
from agent.telemetry import TelemetryCollector
from fleet.wire.bundle import BundleManifest, Postprocess, TensorSpec
from tests.waiting import wait_until

FEATURES = 4
READ_TIMEOUT_S = 0.5
CLOSE_BOUND_S = 5.0
LIMITS = ApiLimits(max_body_bytes=64 * 1024, max_batch_rows=8, read_timeout_s=READ_TIMEOUT_S)


def _linear_onnx(weight: float) -> bytes:
    """A [n, 4] -> [n, 3] MatMul; a large ``weight`` lets a finite input overflow the output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array((np.full((FEATURES, 3), weight) * [1, 2, 3]).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["output"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 3])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(onnx.shape_inference.infer_shapes(model).SerializeToString())


@pytest.fixture(scope="module")
def api() -> Iterator[LocalApi]:
    manifest = BundleManifest(
        model="lin",
        version="1.0.0",
        target="x86-onnx-cpu",
        runtime="onnxruntime",
        model_file="model.onnx",
        input=TensorSpec(name="input", shape=[-1, FEATURES]),
        postprocess=Postprocess(labels=["a", "b", "c"]),
    )
    zeros = np.zeros((1, FEATURES), dtype=np.float32)
    bundle = LoadedBundle(manifest, _linear_onnx(10.0), zeros, np.zeros((1, 3), dtype=np.float32), None)
    service = InferenceService(TelemetryCollector("dev-1", "x86-onnx-cpu"))
    service.activate(ServableModel(bundle, "0" * 64))
    server = LocalApi(service, limits=LIMITS)
    server.start()
    yield server
    server.stop()


def _port(api: LocalApi) -> int:
    return int(api.url.rsplit(":", 1)[1])


def exchange(api: LocalApi, request: bytes, *, close_bound_s: float = CLOSE_BOUND_S) -> tuple[int, bytes, float]:
    """Send ``request``, read until the server closes; return status, body and seconds until the close.

    Fails on a connection reset (a drop) or when the server neither answers nor closes within the bound (a hang).
    """
    with socket.create_connection(("127.0.0.1", _port(api)), timeout=close_bound_s) as sock:
        start = time.monotonic()
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pytest.fail(f"no close within {close_bound_s} s; received {received[:200]!r}")
        except ConnectionResetError:
            pytest.fail(f"connection dropped (reset); received {received[:200]!r}")
        elapsed = time.monotonic() - start
    head, _, body = received.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), f"no status line: {received[:200]!r}"
    return int(status_line.split()[1]), body, elapsed


def post(path: str, body: bytes, *headers: str) -> bytes:
    """A POST with the given body; Content-Length correct unless ``headers`` bring their own framing."""
    framing = (
        []
        if any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers)
        else [f"Content-Length: {len(body)}"]
    )
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", *framing, *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def predict(inputs_json: str) -> bytes:
    return post("/v1/predict", f'{{"inputs": {inputs_json}}}'.encode())


ROW = "[0.1, 0.2, 0.3, 0.4]"
MALFORMED = {
    "invalid utf-8": (post("/v1/predict", b'{"inputs": "\xff\xfe\xfd"}'), 400),
    "invalid utf-16": (post("/v1/predict", b"\xff\xfe\xfd"), 400),
    "nested arrays beyond the parser": (post("/v1/predict", b"[" * 60_000), 400),
    "nested inputs": (predict("[" * 3000 + "]" * 3000), 400),
    "nested objects": (post("/v1/predict", b'{"a":' * 6000 + b"1" + b"}" * 6000), 400),
    "not JSON": (post("/v1/predict", b"inputs=1"), 400),
    "empty body": (post("/v1/predict", b""), 400),
    "no inputs key": (post("/v1/predict", b'{"input": [1]}'), 400),
    "inputs not numbers": (predict('[["a", {}, null, true]]'), 400),
    "integer over the digit limit": (predict("[" + "9" * 5000 + "]"), 400),
    "wrong input shape": (predict("[[1, 2]]"), 400),
    "non-numeric Content-Length": (post("/v1/predict", b"{}", "Content-Length: abc"), 400),
    "negative Content-Length": (post("/v1/predict", b"{}", "Content-Length: -5"), 400),
    "two Content-Lengths": (post("/v1/predict", b"{}", "Content-Length: 2", "Content-Length: 2"), 400),
    "no Content-Length": (b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n\r\n", 411),
    "chunked body": (post("/v1/predict", b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), 411),
    "body shorter than Content-Length": (post("/v1/predict", b'{"inputs":', "Content-Length: 500"), 408),
    "body over the limit": (post("/v1/predict", b"[" * 200_000), 413),
    "Content-Length over the limit, no body": (post("/v1/predict", b"", "Content-Length: 999999999999"), 413),
    "batch over the row cap": (predict("[" + ", ".join([ROW] * 9) + "]"), 413),
    "NaN": (predict("[NaN, 0, 0, 0]"), 422),
    "Infinity": (predict("[0, Infinity, 0, 0]"), 422),
    "-Infinity": (predict("[0, 0, -Infinity, 0]"), 422),
    "number overflowing to infinity": (predict("[0, 0, 0, 1e999]"), 422),
    "number beyond float32": (predict("[1e39, 0, 0, 0]"), 422),
    "finite input, non-finite output": (predict("[3e38, 3e38, 3e38, 3e38]"), 422),
    "unknown path": (post("/v1/nothing", b"{}"), 404),
    "GET on a POST route": (b"GET /v1/predict HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "PUT": (b"PUT /v1/predict HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 405),
    "DELETE on health": (b"DELETE /v1/health HTTP/1.1\r\n\r\n", 405),
    "unknown method": (b"BREW /v1/health HTTP/1.1\r\n\r\n", 405),
    "garbled request line": (b"GARBAGE\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_request_gets_its_status_and_a_closed_connection(api: LocalApi, case: str) -> None:
    request, expected = MALFORMED[case]
    status, body, elapsed = exchange(api, request)
    assert status == expected, body
    assert json.loads(body)["error"]
    assert elapsed < (READ_TIMEOUT_S + 2 if expected == 408 else 2.0)


def test_timed_out_body_is_answered_after_the_read_timeout_not_before(api: LocalApi) -> None:
    status, body, elapsed = exchange(api, post("/v1/predict", b"[", "Content-Length: 10"))
    assert status == 408 and b"Content-Length of 10" in body
    assert READ_TIMEOUT_S <= elapsed < READ_TIMEOUT_S + 2


def test_answers_are_strict_json_and_keep_alive_still_works(api: LocalApi) -> None:
    rows = np.random.default_rng(0).normal(size=(8, FEATURES)).round(3).tolist()
    body = json.dumps({"inputs": rows}).encode()
    with socket.create_connection(("127.0.0.1", _port(api)), timeout=CLOSE_BOUND_S) as sock:
        stream = sock.makefile("rb")
        for _ in range(2):  # two requests on one connection
            sock.sendall(post("/v1/predict", body))
            assert stream.readline().startswith(b"HTTP/1.1 200")
            headers = {}
            while (line := stream.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                headers[name.lower()] = value.strip()
            answer = json.loads(stream.read(int(headers["content-length"])), parse_constant=pytest.fail)
            assert headers.get("connection") != "close"
            assert [p["label"] for p in answer["predictions"]] and len(answer["predictions"]) == 8
            assert all(np.isfinite(p["confidence"]) for p in answer["predictions"])


def test_stream_lines_with_non_finite_numbers_or_past_the_row_cap_are_named(api: LocalApi) -> None:
    six_rows = "[" + ", ".join([ROW] * 6) + "]"
    lines = [ROW.encode(), b"[NaN, 0, 0, 0]", b"[\xff]", six_rows.encode(), ROW.encode(), ROW.encode()]
    status, body, _ = exchange(api, post("/v1/predict/stream", b"\n".join(lines), "Connection: close"))
    answers = [json.loads(line, parse_constant=pytest.fail) for line in body.splitlines()]
    assert status == 200 and len(answers) == 6
    assert [("error" in a) for a in answers] == [False, True, True, False, False, True]
    assert "line 2: NaN is not a finite number" in answers[1]["error"]
    assert "cap of 8 rows" in answers[5]["error"]  # 1 + 6 + 1 rows answered, the 9th is over the cap


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=40,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps({"inputs": v}).encode()),
    st.lists(st.floats(), min_size=FEATURES, max_size=FEATURES).map(lambda r: json.dumps({"inputs": r}).encode()),
    st.lists(json_values.map(json.dumps), max_size=5).map(lambda ls: "\n".join(ls).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/predict", "/v1/predict/stream"]), body=bodies)
def test_fuzzed_bodies_never_get_a_server_error_or_a_drop(api: LocalApi, path: str, body: bytes) -> None:
    status, answer, _ = exchange(api, post(path, body, f"Content-Length: {len(body)}", "Connection: close"))
    assert status < 500, answer
    for line in answer.splitlines():
        json.loads(line, parse_constant=pytest.fail)  # strict JSON: no NaN or Infinity written


def test_connections_beyond_the_cap_get_503_at_once_and_a_freed_slot_serves_again() -> None:
    service = InferenceService(TelemetryCollector("dev-2", "x86-onnx-cpu"))
    server = LocalApi(service, limits=ApiLimits(read_timeout_s=30.0, max_connections=3))
    server.start()
    port = int(server.url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # connected, never sending
    try:
        assert wait_until(lambda: server.active_connections == 3, 10)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            extra.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = extra.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
        assert b"too many connections" in answer
        idle.pop().close()
        assert wait_until(lambda: server.active_connections == 2, 10)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as served:
            served.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert not served.recv(65536).startswith(b"HTTP/1.1 503")
    finally:
        for sock in idle:
            sock.close()
        server.stop()
