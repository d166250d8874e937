"""A hub whose artifacts live in an S3-API bucket (moto's server): a device installs a bundle that is no
longer on the hub's disk, read from the bucket in ranges."""

from __future__ import annotations

import shutil
from pathlib import Path

from hub.app import Hub
from hub.config import HubSettings
from hub.demo.model import TrainedDigits
from tests.integration.fleet_harness import Harness
from tests.s3_server import create_bucket, s3_server


def test_a_device_installs_a_bundle_served_from_the_bucket(tmp_path: Path, trained: TrainedDigits) -> None:
    with s3_server() as endpoint:
        create_bucket(endpoint, "bundles")
        settings = HubSettings(data_dir=tmp_path / "hub", chunk_size=4096,
                               artifact_store=f"s3://bundles/fleet-a?endpoint={endpoint}")  # fmt: skip
        hub = Hub(settings)
        hub.start()
        harness = Harness(hub, tmp_path, trained)
        try:
            published = harness.publish("1.0.0")
            shutil.rmtree(settings.data_dir / "artifacts")  # only the bucket has it now
            (settings.data_dir / "artifacts" / "tmp").mkdir(parents=True)
            agent = harness.agent("s3")
            assert set(harness.deploy("1.0.0", [agent]).values()) == {"done"}
            assert agent.service.model is not None
            assert not hub.store._local(published.bundle_sha256).exists()  # served by ranged reads
        finally:
            harness.close()
