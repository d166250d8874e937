"""Offload to the serving tier (heavy models, cascade) with local fallback, and shadow mode."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from hub.demo.model import TrainedDigits
from hub.serving.app import create_app
from hub.serving.config import ModelSpec
from tests.http_server import running_server
from tests.integration.fleet_harness import Harness


@pytest.fixture
def serving_url(trained: TrainedDigits) -> Iterator[str]:
    spec = ModelSpec(name="digits", version="1.0.0", path=trained.onnx_path)
    with running_server(create_app([spec], registry=CollectorRegistry())) as address:
        yield f"http://{address}"


def test_heavy_model_is_offloaded_and_falls_back_locally_when_the_tier_is_down(
    harness: Harness, serving_url: str
) -> None:
    harness.publish("1.0.0", heavy=True)
    agent = harness.agent("h", offload_url=serving_url, offload_timeout_s=5.0)
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    x = harness.trained.test_x[:4].tolist()
    remote = agent.service.predict(x)
    assert remote["source"] == "offload" and remote["version"] == "1.0.0"
    assert agent.service.offload is not None
    agent.service.offload.base_url = "http://127.0.0.1:9"  # the tier goes away
    local = agent.service.predict(x)
    assert local["source"] == "local" and "offload failed" in local["note"]
    assert [p["label"] for p in local["predictions"]] == [p["label"] for p in remote["predictions"]]
    assert np.allclose(
        [p["confidence"] for p in local["predictions"]], [p["confidence"] for p in remote["predictions"]], atol=1e-4
    )
    agent.flush_telemetry()
    assert harness.hub.ingestor is not None and harness.hub.ingestor.wait_stored(1, timeout_s=30)
    batch = harness.hub.registry.telemetry_batches("digits", "1.0.0")[0]
    assert (batch.requests, batch.offloaded) == (2, 1)


def test_cascade_offloads_only_low_confidence_answers(harness: Harness, serving_url: str) -> None:
    harness.publish("1.0.0")
    agent = harness.agent("c", offload_url=serving_url, cascade_threshold=0.9)
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    sources = []
    for row in harness.trained.test_x[:60]:
        answer = agent.service.predict(row.tolist())
        confident = answer["predictions"][0]["confidence"] >= 0.9
        sources.append((answer["source"], confident))
    assert all(source == "local" for source, confident in sources if confident)
    assert any(source == "offload" for source, _ in sources)


def test_shadow_candidate_runs_beside_the_active_model_without_changing_answers(harness: Harness) -> None:
    harness.publish("1.0.0")
    harness.publish("1.1.0")
    agent = harness.agent("s", shadow_sample_rate=1.0)
    assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
    assert set(harness.deploy("1.1.0", [agent], shadow=True).values()) == {"done"}
    assert agent.service.shadow is not None and agent.service.shadow.version == "1.1.0"
    for row in harness.trained.test_x[:10]:
        assert agent.service.predict(row.tolist())["version"] == "1.0.0"
    agent.service.close()  # drains the shadow queue
    agent.flush_telemetry()
    assert harness.hub.ingestor is not None and harness.hub.ingestor.wait_stored(1, timeout_s=30)
    shadow = harness.hub.registry.telemetry_batches("digits", "1.0.0")[0].shadow
    assert shadow is not None and shadow.candidate_version == "1.1.0"
    assert shadow.compared == 10 and shadow.agreed == 10  # same weights: full agreement
    # Promoting the candidate makes it active and ends the shadow.
    assert set(harness.deploy("1.1.0", [agent]).values()) == {"done"}
    assert agent.service.predict(harness.trained.test_x[0].tolist())["version"] == "1.1.0"
    assert agent.service.shadow is None
