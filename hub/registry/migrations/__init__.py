"""Schema migrations (Alembic): ``versions/`` holds one revision per schema change, ``0001`` the first release.

`upgrade_to_head` is what the hub runs at start and ``edgefleet hub migrate`` runs on demand.
"""

from hub.registry.migrations.runner import (
    BASELINE_REVISION,
    MigrationResult,
    alembic_config,
    current_revision,
    head_revision,
    upgrade_to_head,
)

__all__ = [
    "BASELINE_REVISION",
    "MigrationResult",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade_to_head",
]
