"""Offload to the hub's cloud serving tier over the Open Inference Protocol (KServe V2 JSON).

Stdlib only (urllib), so the agent stays small. Failures (timeout, connection refused, HTTP errors, a
malformed answer) raise `OffloadError`; callers answer locally instead.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from agent.errors import AgentError

_DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float16): "FP16",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int8): "INT8",
    np.dtype(np.uint8): "UINT8",
}


class OffloadError(AgentError):
    """The serving tier could not answer in time."""


class OffloadClient:
    """Sends prepared batches to ``{base_url}/v2/models/{model}/versions/{version}/infer``."""

    def __init__(self, base_url: str, *, timeout_s: float = 2.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        self.calls = 0
        self.failures = 0

    def infer(self, model: str, version: str, input_name: str, batch: np.ndarray) -> np.ndarray:
        """Raw outputs of the served model for ``batch`` (already pre-processed)."""
        self.calls += 1
        datatype = _DATATYPES.get(batch.dtype)
        if datatype is None:
            raise OffloadError(f"cannot offload inputs of dtype {batch.dtype}")
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": input_name,
                        "datatype": datatype,
                        "shape": list(batch.shape),
                        "data": batch.ravel().tolist(),
                    }
                ]
            }
        ).encode()
        url = f"{self.base_url}/v2/models/{model}/versions/{version}/infer"
        request = urllib.request.Request(url, data=body, method="POST", headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer: dict[str, Any] = json.loads(response.read())
            output = answer["outputs"][0]
            return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
        except urllib.error.HTTPError as exc:
            self.failures += 1
            raise OffloadError(f"serving tier answered {exc.code} for {model}:{version}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            self.failures += 1
            raise OffloadError(f"serving tier unreachable at {self.base_url}: {exc}") from exc
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self.failures += 1
            raise OffloadError(f"malformed answer from the serving tier: {exc}") from exc
