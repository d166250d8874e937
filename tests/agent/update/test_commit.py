"""COMMIT: the candidate becomes active (saved before it serves), the previous one last known good."""

from __future__ import annotations

from agent.errors import AgentError
from agent.model import ServableModel
from agent.state_store import StateStore
from agent.update.commit import Commit
from agent.update.models import CandidateCache
from agent.update.table import Event, Outcome, run_handler
from fleet.wire.messages import UpdateState
from tests.agent.conftest import Device, MemoryHub
from tests.agent.update.helpers import install, ledger, record, slots


def _commit(device: Device, served: list[ServableModel | None], shadows: list[ServableModel | None]) -> Commit:
    return Commit(
        ledger(device),
        device.downloader,
        slots(device),
        CandidateCache(),
        activate=served.append,
        activate_shadow=shadows.append,
    )


def test_the_candidate_becomes_active_and_is_saved_with_a_restore_point(device: Device, memory_hub: MemoryHub) -> None:
    old, new = memory_hub.publish("1.0.0"), memory_hub.publish("1.1.0")
    previous = install(device, old)
    stale = install(device, memory_hub.publish("0.9.0"))
    device.updater.state.active = previous
    rec = record(new, UpdateState.COMMIT)
    rec.candidate = install(device, new)
    served: list[ServableModel | None] = []
    assert run_handler(_commit(device, served, []), rec).event is Event.OK
    assert [m.sha256 for m in served if m] == [new.sha256]
    saved = StateStore(device.store.path).load()
    assert saved.active == rec.candidate and saved.last_known_good == previous
    assert rec.restore_point is not None and rec.restore_point.active == previous
    assert not device.downloader.final_path(new.sha256).exists()  # the download is freed
    assert {p.stem for p in device.slots_dir.iterdir()} == {old.sha256, new.sha256}
    assert stale.sha256 not in {p.stem for p in device.slots_dir.iterdir()}


def test_a_resumed_commit_does_not_switch_twice(device: Device, memory_hub: MemoryHub) -> None:
    old, new = memory_hub.publish("1.0.0"), memory_hub.publish("1.1.0")
    device.updater.state.active = install(device, old)
    rec = record(new, UpdateState.COMMIT)
    rec.candidate = install(device, new)
    served: list[ServableModel | None] = []
    run_handler(_commit(device, served, []), rec)
    run_handler(_commit(device, served, []), rec)  # the agent died after the switch was saved
    assert len(served) == 1
    assert device.updater.state.last_known_good is not None
    assert device.updater.state.last_known_good.sha256 == old.sha256


def test_a_shadow_order_runs_beside_the_active_model(device: Device, memory_hub: MemoryHub) -> None:
    old, new = memory_hub.publish("1.0.0"), memory_hub.publish("1.1.0").model_copy(update={"shadow": True})
    device.updater.state.active = install(device, old)
    rec = record(new, UpdateState.COMMIT)
    rec.candidate = install(device, new)
    served: list[ServableModel | None] = []
    shadows: list[ServableModel | None] = []
    outcome = run_handler(_commit(device, served, shadows), rec)
    assert outcome.detail.startswith("running in shadow beside m:1.0.0")
    assert served == [] and [m.sha256 for m in shadows if m] == [new.sha256]
    state = StateStore(device.store.path).load()
    assert state.active is not None and state.active.sha256 == old.sha256 and state.shadow == rec.candidate


def test_an_activation_failure_fails_the_commit(device: Device, memory_hub: MemoryHub) -> None:
    new = memory_hub.publish("1.0.0")
    rec = record(new, UpdateState.COMMIT)
    rec.candidate = install(device, new)

    def broken(_model: ServableModel | None) -> None:
        raise AgentError("runtime refused the model")

    commit = Commit(
        ledger(device), device.downloader, slots(device), CandidateCache(), activate=broken, activate_shadow=broken
    )
    assert run_handler(commit, rec) == Outcome.fail("runtime refused the model")
