"""The hub's broker logins on the embedded broker: an unknown id costs the same hashing as a known one, failures back
the id off (refused without hashing, even with the right secret, until the clock moves on), and are counted."""

from __future__ import annotations

import gc
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import time_machine

from hub.app import Hub
from hub.auth import BackoffPolicy, LoginBackoffSettings
from hub.config import HubSettings
from hub.registry import credentials

STRICT = LoginBackoffSettings(per_identity=BackoffPolicy(free_failures=1, base_s=60))


class ScryptSpy:
    """Counts scrypt hashings while passing them through."""

    def __init__(self) -> None:
        self.calls = 0
        self._scrypt = hashlib.scrypt

    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        self.calls += 1
        return self._scrypt(*args, **kwargs)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(HubSettings(data_dir=tmp_path / "hub", login_backoff=STRICT))
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def test_start_freezes_what_it_built_out_of_the_collector_and_stop_unfreezes_it(hub: Hub) -> None:
    # full collections walk every tracked object; at telemetry rates, walking the hub's own cost ~40 us a batch
    assert gc.get_freeze_count() > 10_000
    hub.stop()  # safe twice: the fixture stops it again
    assert gc.get_freeze_count() == 0


def _login(hub: Hub, username: str, password: str) -> bool:
    """Whether the hub's broker accepts this login (a real MQTT CONNECT)."""
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=username)
    client.username_pw_set(username, password)
    answered = threading.Event()
    outcome: dict[str, bool] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome["accepted"] = not reason.is_failure
        answered.set()

    client.on_connect = on_connect
    client.connect(hub.broker_address.host, hub.broker_address.port)
    client.loop_start()
    try:
        assert answered.wait(15), "the broker did not answer CONNECT"
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome["accepted"]


def _failures(hub: Hub, reason: str) -> float:
    labels = {"kind": "device", "reason": reason}
    return hub.monitoring.prometheus.get_sample_value("edgefleet_login_failures_total", labels) or 0.0


def test_unknown_ids_hash_like_known_ones_and_failures_back_the_id_off(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, secret = hub.registry.provision_device("cam-1", "rpi4-arm64")
    credentials.dummy_hash()  # made once per process; not part of any login's cost
    spy = ScryptSpy()
    monkeypatch.setattr(hashlib, "scrypt", spy)
    with time_machine.travel(1_800_000_000, tick=True) as clock:
        assert not _login(hub, "ghost", secret)
        assert spy.calls == 1  # the dummy hash: no faster answer for an unknown id
        assert not _login(hub, "cam-1", "wrong")
        assert spy.calls == 2
        assert not _login(hub, "cam-1", "wrong")
        assert not _login(hub, "cam-1", secret)  # backed off: refused without hashing
        assert spy.calls == 3
        assert (_failures(hub, "bad_credentials"), _failures(hub, "backed_off")) == (3, 1)
        assert _login(hub, "cam-2-not-provisioned", secret) is False  # other ids are still checked
        clock.shift(61)
        assert _login(hub, "cam-1", secret)
