"""`DeviceRecords` on PostgreSQL: a write that fails because the database dropped the connection loses nothing,
the reports are written again and the stored rows catch up without a restart."""

from __future__ import annotations

import threading

from sqlalchemy import text

from fleet.wire.messages import DeviceState, InstalledModel, UpdateEvent, UpdateState
from hub.devices.records import DeviceRecords
from hub.registry import Database, Registry
from tests.hub.registry.variants import SHA, add_variant
from tests.pg_schema import fresh_schema
from tests.waiting import wait_until

TARGET = "x86-onnx-cpu"


def _deployment(registry: Registry) -> str:
    registry.add_version("m", "1.0.0")
    add_variant(registry, "1.0.0", TARGET)
    registry.provision_device("pc-1", TARGET)
    deployment, _ = registry.create_deployment("m", "1.0.0", ["pc-1"])
    return deployment.id


def _drop_connections(url: str, db: Database) -> None:
    """Terminate every backend of ``db``'s pool, as a database restart does."""
    with db.engine.connect() as connection:
        pid = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
    other = Database(url)
    try:
        with other.engine.begin() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        other.close()


def test_reports_a_failed_write_held_are_written_again() -> None:
    with fresh_schema() as url:
        db = Database(url, ping_after_idle_s=3600.0)  # no ping: the next write meets the dead connection
        registry = Registry(db)
        deployment_id = _deployment(registry)
        stored: list[UpdateEvent] = []
        lock = threading.Lock()

        def told(events: list[UpdateEvent]) -> None:
            with lock:
                stored.extend(events)

        records = DeviceRecords(registry, on_events=told, gather_s=0.0, retry_first_s=0.01)
        records.start()
        try:
            _drop_connections(url, db)
            installed = InstalledModel(model="m", version="1.0.0", sha256=SHA, target=TARGET)
            records.state(DeviceState(device_id="pc-1", online=True, active=installed, update_state=UpdateState.DONE))
            done = UpdateEvent(device_id="pc-1", deployment_id=deployment_id, state=UpdateState.DONE)
            records.event(done)

            def stored_done() -> bool:
                with lock:
                    return stored == [done]

            assert wait_until(stored_done, 30.0)
            assert records.failed_writes >= 1  # the fault happened, and the retry repaired it
            assert registry.get_device("pc-1").active_version == "1.0.0"
            assert [row.state for row in registry.deployment_devices(deployment_id)] == ["done"]
        finally:
            records.close()
            db.close()


def test_kept_reports_are_the_newest_state_per_device_and_the_newest_events_within_the_bound() -> None:
    records = DeviceRecords(Registry(Database("sqlite://")), on_events=lambda _events: None, max_pending=3)
    old, new = DeviceState(device_id="pc-1", online=True), DeviceState(device_id="pc-1", online=False)
    events = [UpdateEvent(device_id="pc-1", deployment_id=f"d{i}", state=UpdateState.DONE) for i in range(3)]
    assert records._keep([old, events[0], new, events[1]]) == [events[0], new, events[1]]
    assert records._keep([old, events[0], new, events[1], events[2]]) == [new, events[1], events[2]]
