"""Fixtures for end-to-end tests: a trained model (once per session) and a running harness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.demo.model import TrainedDigits, train_digits
from tests.integration.fleet_harness import Harness, start_hub


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedDigits:
    return train_digits(tmp_path_factory.mktemp("model"), epochs=40)


@pytest.fixture
def harness(tmp_path: Path, broker_url: str | None, trained: TrainedDigits) -> Iterator[Harness]:
    hub = start_hub(tmp_path, broker_url)
    h = Harness(hub, tmp_path, trained)
    yield h
    h.close()
