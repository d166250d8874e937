"""HEALTH_CHECK: the candidate's golden self-test must pass; the detail says what was measured."""

from __future__ import annotations

from agent.update.health_check import HealthCheck
from agent.update.models import CandidateCache
from agent.update.table import Event, Outcome, run_handler
from fleet.wire.messages import UpdateState
from tests.agent.conftest import GOLDEN_Y, Device, MemoryHub
from tests.agent.update.helpers import install, ledger, record


def test_a_good_candidate_passes_and_stays_loaded_for_commit(device: Device, memory_hub: MemoryHub) -> None:
    order = memory_hub.publish("1.0.0")
    rec = record(order, UpdateState.HEALTH_CHECK)
    rec.candidate = install(device, order)
    candidates = CandidateCache()
    outcome = run_handler(HealthCheck(ledger(device), candidates), rec)
    assert outcome.event is Event.OK and outcome.detail.startswith("self-test passed on 8 vectors")
    assert candidates.load(rec.candidate) is candidates.load(rec.candidate)


def test_wrong_golden_outputs_fail_the_check(device: Device, memory_hub: MemoryHub) -> None:
    order = memory_hub.publish("1.1.0", golden_y=GOLDEN_Y[:, ::-1].copy())
    rec = record(order, UpdateState.HEALTH_CHECK)
    rec.candidate = install(device, order)
    outcome = run_handler(HealthCheck(ledger(device), CandidateCache()), rec)
    assert outcome.event is Event.FAIL and outcome.detail.startswith("self-test failed: max abs error")


def test_without_an_installed_candidate_the_check_fails(device: Device, memory_hub: MemoryHub) -> None:
    rec = record(memory_hub.publish("1.0.0"), UpdateState.HEALTH_CHECK)
    outcome = run_handler(HealthCheck(ledger(device), CandidateCache()), rec)
    assert outcome == Outcome.fail("no installed candidate to check")
