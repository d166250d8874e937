"""ROLLBACK: what COMMIT switched is put back and served again; the candidate's files are removed."""

from __future__ import annotations

from agent.model import ServableModel
from agent.state_store import RestorePoint, StateStore
from agent.update.models import CandidateCache
from agent.update.rollback import Rollback
from agent.update.table import Event, run_handler
from fleet.wire.messages import UpdateState
from tests.agent.conftest import Device, MemoryHub
from tests.agent.update.helpers import install, ledger, record, slots


def _rollback(device: Device, served: list[ServableModel | None]) -> Rollback:
    return Rollback(
        ledger(device),
        device.downloader,
        slots(device),
        CandidateCache(),
        activate=served.append,
        activate_shadow=lambda _m: None,
    )


def test_restores_the_slots_commit_switched_and_serves_the_previous_model(
    device: Device, memory_hub: MemoryHub
) -> None:
    older, old, new = memory_hub.publish("0.9.0"), memory_hub.publish("1.0.0"), memory_hub.publish("1.1.0")
    state = device.updater.state
    before = RestorePoint(active=install(device, old), last_known_good=install(device, older))
    rec = record(new, UpdateState.ROLLBACK)
    rec.candidate = install(device, new)
    rec.restore_point = before
    state.active, state.last_known_good = rec.candidate, before.active  # as COMMIT left it
    rec.detail = "activation failed"
    served: list[ServableModel | None] = []
    outcome = run_handler(_rollback(device, served), rec)
    assert outcome.event is Event.OK
    assert outcome.detail == "rolled back, still serving m:1.0.0: activation failed"
    saved = StateStore(device.store.path).load()
    assert (saved.active, saved.last_known_good) == (before.active, before.last_known_good)
    assert [m.sha256 for m in served if m] == [old.sha256]
    assert {p.stem for p in device.slots_dir.iterdir()} == {old.sha256, older.sha256}


def test_after_a_failed_health_check_the_active_model_is_untouched_and_the_candidate_removed(
    device: Device, memory_hub: MemoryHub
) -> None:
    old, new = memory_hub.publish("1.0.0"), memory_hub.publish("1.1.0")
    device.updater.state.active = install(device, old)
    rec = record(new, UpdateState.ROLLBACK)
    rec.candidate = install(device, new)
    rec.detail = "self-test failed"
    served: list[ServableModel | None] = []
    outcome = run_handler(_rollback(device, served), rec)
    assert outcome.detail == "rolled back, still serving m:1.0.0: self-test failed"
    assert served == [] and rec.candidate is None
    assert {p.stem for p in device.slots_dir.iterdir()} == {old.sha256}
    assert not device.downloader.final_path(new.sha256).exists()
