"""A data contract shipped in the bundle, broken on a real device: counted per rule in telemetry and reported
per cohort by the hub; a device configured to refuse answers such requests with 400."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from agent.errors import NonFiniteError
from fleet.wire.contract import infer
from hub.auth import Role
from tests.hub.auth.clients import api_client
from tests.integration.fleet_harness import Harness


def test_contract_violations_are_counted_on_devices_and_reported_per_cohort(harness: Harness) -> None:
    x = harness.trained.test_x.astype(np.float32)
    harness.publish("1.0.0", contract=infer({"input": x}, model="digits"))
    counting = harness.agent("count")
    refusing = harness.agent("refuse", http_port=0, refuse_contract_violations=True)
    assert set(harness.deploy("1.0.0", [counting, refusing]).values()) == {"done"}

    out_of_range = x[:10] * 100  # digits scaled far beyond anything seen in calibration
    with_nan = x[10:14].copy()
    with_nan[:, 5] = np.nan
    assert len(counting.service.predict(x[20:40].tolist())["predictions"]) == 20  # clean rows
    assert len(counting.service.predict(out_of_range.tolist())["predictions"]) == 10  # counted, still answered
    with pytest.raises(NonFiniteError):  # counted by the contract, then refused as non-finite
        counting.service.predict(with_nan)
    assert refusing.api is not None
    refused = httpx.post(f"{refusing.api.url}/v1/predict", json={"inputs": out_of_range[:5].tolist()})
    assert refused.status_code == 400 and "input.range (5 rows)" in refused.json()["error"]
    assert httpx.post(f"{refusing.api.url}/v1/predict", json={"inputs": x[:6].tolist()}).status_code == 200

    for agent in (counting, refusing):
        assert agent.flush_telemetry() == 1
    assert harness.hub.ingestor is not None and harness.hub.ingestor.wait_stored(2, timeout_s=30)
    report = api_client(harness.hub, Role.VIEWER).get(
        "/models/digits/versions/1.0.0/contract-violations", params={"by": "target"}
    )
    assert report.status_code == 200
    cohorts = {c["cohort"]: c for c in report.json()["cohorts"]}
    everyone = cohorts["all"]
    assert everyone["rows"] == 20 + 10 + 4 + 5 + 6
    assert everyone["violations"] == {"input.range": 15, "input.nan": 4}
    assert everyone["rates"]["input.range"] == 15 / 45 and everyone["rate"] == 15 / 45
    assert sorted(everyone["devices"]) == sorted(a.config.device_id for a in (counting, refusing))
    assert cohorts["target=x86-onnx-cpu"]["violations"] == everyone["violations"]
    refused_batch = next(
        b for b in harness.hub.registry.telemetry_batches("digits", "1.0.0") if b.device_id == refusing.config.device_id
    )
    assert refused_batch.requests == 1 and refused_batch.contract_violations == {"input.range": 5}
