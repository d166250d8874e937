"""`Verdict`: the one answer of a canary analysis, of each of its metrics, and of a rollout's gate."""

from enum import StrEnum


class Verdict(StrEnum):
    """Pass, fail or inconclusive: what a canary analysis (or a metric of it) concludes, and what a gate hears.

    The values are stored (rollout snapshots and canary reports in the database, the REST API): never rename them.
    """

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


__all__ = ["Verdict"]
