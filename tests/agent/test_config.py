"""agent.toml: defaults that keep a device serving and its API bounded, and one-line errors for bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import AgentConfig
from agent.errors import AgentConfigError

BASE = 'device_id = "d1"\ntarget = "x86-onnx-cpu"\ntrust_root = "root.json"\n'


def _load(tmp_path: Path, extra: str = "") -> AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + extra)
    return AgentConfig.load(path)


def test_defaults_bound_the_local_api_and_retry_the_broker_forever(tmp_path: Path) -> None:
    config = _load(tmp_path)
    assert config.http_max_body_bytes == 16 * 1024 * 1024 and config.http_max_batch_rows == 1024
    assert config.http_read_timeout_s == 10.0
    assert (config.reconnect_initial_s, config.reconnect_max_s, config.connect_timeout_s) == (1.0, 60.0, 10.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("reconnect_initial_s = 5\nreconnect_max_s = 1\n", r"agent.toml: reconnect_initial_s must not exceed"),
        ("http_max_batch_rows = 0\n", r"agent.toml: http_max_batch_rows: Input should be greater than or equal to 1"),
        ("http_read_timeout_s = 0\n", r"agent.toml: http_read_timeout_s: Input should be greater than 0"),
    ],
)
def test_bad_settings_are_refused_with_the_key_named(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(AgentConfigError, match=message) as refused:
        _load(tmp_path, extra)
    assert "\n" not in str(refused.value)


def test_failover_nodes_share_the_broker_urls_scheme(tmp_path: Path) -> None:
    base = {"device_id": "cam-1", "target": "x86-onnx-cpu", "trust_root": tmp_path / "root.json"}
    config = AgentConfig.model_validate(
        {**base, "broker_url": "mqtt://n1:1883", "broker_failover_urls": ["mqtt://n2:1883", "mqtt://n1:1883"]}
    )
    assert config.broker_nodes() == ["mqtt://n1:1883", "mqtt://n2:1883"]
    with pytest.raises(ValidationError, match="must use the same scheme as broker_url"):
        AgentConfig.model_validate({**base, "broker_url": "mqtts://n1:8883", "broker_failover_urls": ["mqtt://n2"]})
