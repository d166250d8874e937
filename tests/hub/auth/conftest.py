"""A hub that is built but not started: its REST app, registry and login guard are all these tests need."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from hub.api import create_app
from hub.app import Hub
from hub.auth import BackoffPolicy, LoginBackoffSettings
from hub.config import HubSettings

#: Three bad tokens from one address are free; the fourth backs it off for 30 s.
BACKOFF = LoginBackoffSettings(per_address=BackoffPolicy(free_failures=3, base_s=30))


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(HubSettings(data_dir=tmp_path / "hub", login_backoff=BACKOFF, trusted_proxies=["10.9.9.9"]))
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def app(hub: Hub) -> FastAPI:
    """The hub's REST app (one per hub: its routers register metrics in the hub's registry)."""
    return create_app(hub)
