"""Opt-in capture end to end: a real agent samples its inputs, sends them on its capture topic, the hub stores
them, and ``edgefleet capture export`` (through the hub's REST API) writes an .npz with the rows and the answers
given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from typer.testing import CliRunner

from hub.auth import Role
from hub.cli import app
from tests.hub.cli.live_hub import serving
from tests.integration.fleet_harness import Harness
from tests.waiting import wait_until


def test_captured_inputs_are_exported_with_their_predictions(harness: Harness, tmp_path: Path) -> None:
    harness.publish("1.0.0")
    capturing = harness.agent("cap", capture_rate=1.0, capture_max_per_hour=25)
    private = harness.agent("priv")  # capture is off by default
    assert set(harness.deploy("1.0.0", [capturing, private]).values()) == {"done"}
    x = harness.trained.test_x[:30].astype(np.float32)
    answer = capturing.service.predict(x.tolist())
    private.service.predict(x.tolist())
    for agent in (capturing, private):
        agent.flush_telemetry()
    assert wait_until(lambda: len(harness.hub.captures.rows("digits", "1.0.0")) == 1, timeout_s=30)

    out = tmp_path / "samples.npz"
    parquet = tmp_path / "samples.parquet"
    with serving(harness.hub, Role.OPERATOR) as hub_args:
        exported = CliRunner().invoke(app, [*hub_args, "capture", "export", "digits:1.0.0", "--out", str(out)])
        as_parquet = CliRunner().invoke(
            app, [*hub_args, "capture", "export", "digits:1.0.0", "--out", str(parquet), "--json"]
        )
        deleted = CliRunner().invoke(app, [*hub_args, "capture", "delete", "digits:1.0.0", "--json"])
    assert exported.exit_code == 0, exported.output
    with np.load(out, allow_pickle=False) as samples:
        assert samples["inputs"].shape == (25, 64)  # the hourly cap
        np.testing.assert_allclose(samples["inputs"], x[:25])
        assert list(samples["labels"]) == [p["label"] for p in answer["predictions"][:25]]
        assert set(samples["device_ids"]) == {capturing.config.device_id}
    assert as_parquet.exit_code == 0, as_parquet.output
    assert json.loads(as_parquet.stdout) == {"out": str(parquet), "rows": 25}
    table = pq.read_table(parquet)
    assert table.num_rows == 25 and json.loads(table.schema.metadata[b"input_shape"]) == [64]
    np.testing.assert_allclose(np.asarray(table.column("inputs").to_pylist()), x[:25])
    assert table.column("labels").to_pylist() == [p["label"] for p in answer["predictions"][:25]]
    assert deleted.exit_code == 0 and json.loads(deleted.stdout)["deleted_messages"] == 1
    assert harness.hub.captures.rows("digits", "1.0.0") == []
