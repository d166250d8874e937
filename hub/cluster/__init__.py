"""Several hub replicas on one PostgreSQL: leader election with fencing and the duties only the leader runs."""

from hub.cluster.duties import FencedOrders, LeaderDuties
from hub.cluster.leadership import AlwaysLeader, FencedError, Leadership, PostgresLeadership, leadership_for

__all__ = [
    "AlwaysLeader",
    "FencedError",
    "FencedOrders",
    "LeaderDuties",
    "Leadership",
    "PostgresLeadership",
    "leadership_for",
]
