"""Registry behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from fleet.wire.messages import DeviceState, InstalledModel, TelemetryBatch, UpdateEvent, UpdateState
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS, HistogramAccumulator
from hub.errors import ConflictError, InvalidRequestError, NotFoundError
from hub.registry import Database, Registry
from tests.hub.registry.variants import SHA, add_variant


@pytest.fixture
def registry(database_url: str):
    db = Database(database_url)
    yield Registry(db)
    db.close()


def test_versions_order_by_semver_not_text(registry: Registry) -> None:
    for version in ("1.2.0", "1.10.0", "1.9.1", "2.0.0-rc.1"):
        registry.add_version("m", version)
    assert [v.version for v in registry.list_versions("m")] == ["2.0.0-rc.1", "1.10.0", "1.9.1", "1.2.0"]


def test_duplicate_version_and_bad_semver_are_refused(registry: Registry) -> None:
    registry.add_version("m", "1.0.0")
    with pytest.raises(ConflictError, match="already registered"):
        registry.add_version("m", "1.0.0")
    with pytest.raises(InvalidRequestError, match="semantic versioning"):
        registry.add_version("m", "v1")


def test_variant_needs_known_target_and_registered_version(registry: Registry) -> None:
    with pytest.raises(NotFoundError):
        add_variant(registry, "3.0.0")
    registry.add_version("m", "3.0.0")
    with pytest.raises(InvalidRequestError, match="unknown target"):
        add_variant(registry, "3.0.0", target="toaster")
    add_variant(registry, "3.0.0")
    with pytest.raises(ConflictError):
        add_variant(registry, "3.0.0")


def test_device_credentials_are_hashed_and_checked(registry: Registry) -> None:
    device, secret = registry.provision_device("cam-1", "rpi4-arm64", {"site": "a"})
    assert secret not in device.credential_hash
    assert registry.check_device_secret("cam-1", secret)
    assert not registry.check_device_secret("cam-1", secret + "x")
    assert not registry.check_device_secret("cam-2", secret)
    with pytest.raises(ConflictError):
        registry.provision_device("cam-1", "rpi4-arm64")
    with pytest.raises(InvalidRequestError):
        registry.provision_device("../etc", "rpi4-arm64")


def test_a_renewed_secret_replaces_every_hash_and_the_old_secret_stops_checking(registry: Registry) -> None:
    import bcrypt

    from hub.registry.credentials import verify_password
    from hub.registry.tables import Device

    before, old = registry.provision_device("cam-1", "rpi4-arm64", {"site": "a"})
    with registry.db.session() as session:  # provisioned before migration 0011: no NATS hash
        row = session.get(Device, "cam-1")
        assert row is not None
        row.nats_hash = None
        session.add(row)
    after, secret = registry.renew_device_secret("cam-1")
    assert secret != old and (after.id, after.target, after.labels) == ("cam-1", "rpi4-arm64", {"site": "a"})
    stored = registry.get_device("cam-1")
    assert stored.credential_hash != before.credential_hash and stored.broker_hash != before.broker_hash
    assert registry.check_device_secret("cam-1", secret) and not registry.check_device_secret("cam-1", old)
    assert stored.broker_hash is not None and verify_password(secret, stored.broker_hash)
    assert not verify_password(old, stored.broker_hash)
    assert stored.nats_hash is not None and bcrypt.checkpw(secret.encode(), stored.nats_hash.encode())
    with pytest.raises(NotFoundError):
        registry.renew_device_secret("cam-2")


def test_deployment_refuses_devices_without_a_variant_for_their_target(registry: Registry) -> None:
    registry.add_version("m", "1.0.0")
    add_variant(registry, "1.0.0")
    registry.provision_device("pc-1", "x86-onnx-cpu")
    registry.provision_device("pi-1", "rpi4-arm64")
    with pytest.raises(InvalidRequestError, match=r"pi-1 \(rpi4-arm64\)"):
        registry.create_deployment("m", "1.0.0", ["pc-1", "pi-1"])
    deployment, chosen = registry.create_deployment("m", "1.0.0", ["pc-1"])
    assert chosen["pc-1"].target == "x86-onnx-cpu"
    assert [row.device_id for row in registry.deployment_devices(deployment.id)] == ["pc-1"]


def test_device_state_updates_inventory(registry: Registry) -> None:
    registry.provision_device("pc-1", "x86-onnx-cpu")
    installed = InstalledModel(model="m", version="1.0.0", sha256=SHA, target="x86-onnx-cpu")
    assert registry.apply_device_state(DeviceState(device_id="pc-1", online=True, active=installed))
    device = registry.get_device("pc-1")
    assert (device.online, device.active_version) == (True, "1.0.0")
    assert not registry.apply_device_state(DeviceState(device_id="ghost", online=True))


def test_a_batch_of_states_and_events_is_applied_as_if_one_by_one(registry: Registry) -> None:
    registry.add_version("m", "1.0.0")
    add_variant(registry, "1.0.0")
    for name in ("pc-1", "pc-2", "pc-3"):
        registry.provision_device(name, "x86-onnx-cpu")
    installed = InstalledModel(model="m", version="1.0.0", sha256=SHA, target="x86-onnx-cpu")
    applied = registry.apply_device_states(
        [
            DeviceState(device_id="pc-1", online=True, active=installed, update_state=UpdateState.DOWNLOAD),
            DeviceState(device_id="ghost", online=True),
            DeviceState(device_id="pc-1", online=True, active=installed, update_state=UpdateState.DONE),
            DeviceState(device_id="pc-2", online=False),  # names no model: keeps the one it had
        ]
    )
    assert sorted(applied) == ["pc-1", "pc-2"]
    one, two = registry.get_device("pc-1"), registry.get_device("pc-2")
    assert (one.update_state, one.active_version, one.online) == ("done", "1.0.0", True)
    assert (two.active_version, two.online) == (None, False)

    deployment, _ = registry.create_deployment("m", "1.0.0", ["pc-1", "pc-2", "pc-3"])

    def event(device: str, state: UpdateState, *, ok: bool = True, detail: str = "") -> UpdateEvent:
        return UpdateEvent(device_id=device, deployment_id=deployment.id, state=state, ok=ok, detail=detail)

    events = [
        event("pc-1", UpdateState.DOWNLOAD),
        event("pc-1", UpdateState.DONE),
        event("pc-2", UpdateState.FAILED, ok=False, detail="disk full"),
        event("pc-2", UpdateState.DOWNLOAD),  # a late redelivery after the outcome changes nothing
        event("pc-3", UpdateState.VERIFY),
        UpdateEvent(device_id="pc-3", deployment_id="no-such-deployment", state=UpdateState.DONE),
    ]
    assert registry.record_update_events(events) == 5
    rows = {r.device_id: (r.state, r.ok, r.detail) for r in registry.deployment_devices(deployment.id)}
    assert rows == {"pc-1": ("done", True, ""), "pc-2": ("failed", False, "disk full"), "pc-3": ("verify", True, "")}


def test_a_waves_order_sequences_are_reserved_together(registry: Registry) -> None:
    for name in ("pc-1", "pc-2"):
        registry.provision_device(name, "x86-onnx-cpu")
    first = registry.next_order_sequences(["pc-2", "pc-1", "ghost", "pc-1"])
    assert sorted(first) == ["pc-1", "pc-2"]  # a device that does not exist is left out
    second = registry.next_order_sequences(["pc-1"])
    assert second["pc-1"] > first["pc-1"] and registry.next_order_sequence("pc-2") > first["pc-2"]
    with pytest.raises(NotFoundError, match="ghost"):
        registry.next_order_sequence("ghost")


def test_telemetry_duplicates_are_dropped_by_batch_id(registry: Registry) -> None:
    batch = TelemetryBatch(
        batch_id="b" * 16,
        device_id="pc-1",
        target="x86-onnx-cpu",
        model="m",
        version="1.0.0",
        window_start=0,
        window_end=1,
        requests=1,
        errors=0,
        latency_ms=HistogramAccumulator(LATENCY_BUCKETS_MS).to_histogram(),
        confidence=HistogramAccumulator(CONFIDENCE_BUCKETS).to_histogram(),
    )
    assert registry.record_telemetry([batch, batch]) == 1
    assert registry.record_telemetry([batch]) == 0
    assert registry.telemetry_count() == 1
    assert registry.telemetry_batches("m", "1.0.0") == [batch]


def test_a_state_delivered_late_does_not_overwrite_a_newer_one(registry: Registry) -> None:
    registry.provision_device("pc-1", "x86-onnx-cpu")

    def store(update_state: UpdateState, ts: float, *, online: bool = True) -> str:
        state = DeviceState(device_id="pc-1", online=online, update_state=update_state, deployment_id="r1", ts=ts)
        assert registry.apply_device_states([state]) == ["pc-1"]  # still a provisioned device either way
        return registry.get_device("pc-1").update_state

    assert store(UpdateState.DONE, 1000.0) == "done"
    # another replica, behind, stores the install report the device sent 2 s earlier
    assert store(UpdateState.INSTALL, 998.0) == "done"
    # the last will carries the connect time: going offline always counts
    assert store(UpdateState.IDLE, 900.0, online=False) == "idle"
    assert registry.get_device("pc-1").online is False
    assert store(UpdateState.DOWNLOAD, 1001.0) == "download"
    # the device's clock stepped back an hour: its reports count at once, not an hour later
    assert store(UpdateState.VERIFY, 1001.0 - 3600) == "verify"
