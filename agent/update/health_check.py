"""HEALTH_CHECK: load the candidate with its runtime and run its golden self-test and latency budget."""

from __future__ import annotations

from agent.health import health_check
from agent.state_store import UpdateRecord
from agent.update.ledger import Ledger
from agent.update.models import CandidateCache
from agent.update.table import Outcome


class HealthCheck:
    """A failure (raised `HealthCheckError`) leads to ROLLBACK."""

    def __init__(self, ledger: Ledger, candidates: CandidateCache) -> None:
        self.ledger = ledger
        self.candidates = candidates

    def run(self, record: UpdateRecord) -> Outcome:
        """Check the installed candidate; the detail says what was measured."""
        if self.ledger.is_active(record.order.sha256):
            return Outcome.ok("already active")
        report = health_check(self.candidates.load(record.candidate))
        return Outcome.ok(
            f"self-test passed on {report.vectors} vectors (max abs error {report.max_abs_error:.2g}), "
            f"latency p50 {report.latency_ms_p50:.2f} ms"
        )
